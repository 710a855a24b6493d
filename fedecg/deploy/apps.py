"""The Flower apps ``flwr run`` starts (``pyproject.toml`` ``[tool.flwr.app.components]``).

``server_app`` runs the study its run config names (``config``, ``set``, ``model``, ``out``;
see ``fedecg.federated.datasource``) with ``serve_study``; ``client_app`` is the privacy
layer's ClientApp (sample-level DP when the study asks for it).
"""

from __future__ import annotations

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from fedecg.deploy.study import serve_study
from fedecg.privacy.apps import client_app

server_app = ServerApp()


@server_app.main()
def main(grid: Grid, context: Context) -> None:
    """Run the run config's study on the connected sites."""
    serve_study(grid, dict(context.run_config), context.run_id)


__all__ = ["client_app", "server_app"]
