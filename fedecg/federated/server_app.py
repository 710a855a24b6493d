"""The ServerApp: walks the stages of one model's federated training.

``app`` (declared in ``pyproject.toml``) reads its plan from ``context.run_config`` (keys of
``[tool.flwr.app.config]``, see ``plan_from_run_config``); ``fedecg simulate`` builds its own
ServerApp around a ready ``RunPlan`` with ``build_server_app``.
"""

from __future__ import annotations

from collections.abc import Callable

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from fedecg.federated.datasource import plan_from_run_config
from fedecg.federated.orchestration import Progress, RunPlan, StrategyWrap, run_server

WrapFor = Callable[[RunPlan], StrategyWrap | None]
"""``plan -> strategy wrapper`` (None: plain strategies); the privacy layer's client-level DP."""


def build_server_app(plan: RunPlan | None = None, progress: Progress | None = None,
                     wrap_for: WrapFor | None = None) -> ServerApp:
    """A ServerApp running ``plan``, or the plan in the run config when ``None``."""
    server = ServerApp()

    @server.main()
    def main(grid: Grid, context: Context) -> None:
        chosen = plan or plan_from_run_config(context.run_config, context.run_id)
        run_server(grid, chosen, progress, wrap_for(chosen) if wrap_for else None)

    return server


app = build_server_app()
