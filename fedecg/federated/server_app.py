"""The ServerApp of one model's federated run around a ready ``RunPlan``.

``fedecg simulate`` builds one per model with ``build_server_app``; the ServerApp that
``flwr run`` starts (``[tool.flwr.app.components]``) is ``fedecg.deploy.apps:server_app``,
which reads its study from the run config and walks every model and seed.
"""

from __future__ import annotations

from collections.abc import Callable

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from fedecg.federated.orchestration import Progress, RunPlan, StrategyWrap, run_server

WrapFor = Callable[[RunPlan], StrategyWrap | None]
"""``plan -> strategy wrapper`` (None: plain strategies); the privacy layer's client-level DP."""


def build_server_app(plan: RunPlan, progress: Progress | None = None,
                     wrap_for: WrapFor | None = None) -> ServerApp:
    """A ServerApp running ``plan``."""
    server = ServerApp()

    @server.main()
    def main(grid: Grid, context: Context) -> None:
        run_server(grid, plan, progress, wrap_for(plan) if wrap_for else None)

    return server
