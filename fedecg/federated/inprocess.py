"""A Flower ``Grid`` that runs a ClientApp in this process: federated runs without Ray.

``run_server`` over an ``InProcessGrid`` is a whole federated run in one process, with the real
ServerApp loop and ClientApp: what the tests use, and how ``benchmarks/federated_benchmark.py``
measures the CPU cost of a round apart from Ray's transport and the machine's load.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from flwr.app import Context, Error, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.supercore.task_identity import TaskIdentity


class InProcessGrid:
    """A Flower ``Grid`` that hands each message to a ClientApp in this process (no Ray).

    Each node keeps its own ``Context`` across rounds, as Flower's simulation does; a ClientApp
    exception becomes an error reply, as in Flower's simulation runtime.
    """

    def __init__(self, client_app: ClientApp, node_configs: list[dict[str, Any]]) -> None:
        # Flower's Message reads the identity of the task running in this process
        TaskIdentity.run_id, TaskIdentity.task_id, TaskIdentity.node_id = 1, 1, 1
        self.client_app = client_app
        self.contexts = {100 + i: Context(run_id=1, node_id=100 + i, node_config=dict(cfg),
                                          state=RecordDict(), run_config={})
                         for i, cfg in enumerate(node_configs)}
        self.sent = 0

    def get_node_ids(self) -> list[int]:
        """The node ids, one per entry of ``node_configs`` (100, 101, ...)."""
        return list(self.contexts)

    def send_and_receive(self, messages: Iterable[Message], *,
                         timeout: float | None = None) -> list[Message]:
        """Each message's reply from the ClientApp, in order (``timeout`` is not used)."""
        replies = []
        for message in messages:
            self.sent += 1
            context = self.contexts[message.metadata.dst_node_id]
            try:
                replies.append(self.client_app(message, context))
            except Exception as exc:  # mirrors flwr's simulation worker
                replies.append(Message(Error(code=2, reason=f"{type(exc)}:<'{exc}'>"),
                                       reply_to=message))
        return replies
