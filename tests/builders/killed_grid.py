"""An ``InProcessGrid`` that dies like a killed process: the federated resume tests."""

from __future__ import annotations

from fedecg.federated.inprocess import InProcessGrid


class KilledGrid(InProcessGrid):
    """Dies (like a killed process) on its ``kill_at``-th exchange (2 per round)."""

    def __init__(self, *args, kill_at: int) -> None:
        super().__init__(*args)
        self.kill_at, self.calls = kill_at, 0

    def send_and_receive(self, messages, *, timeout=None):
        self.calls += 1
        if self.calls == self.kill_at:
            raise KeyboardInterrupt("killed")
        return super().send_and_receive(messages, timeout=timeout)
