"""fedecg's Flower apps and the study that runs them: the only place a ClientApp or a ServerApp
is built (``pyproject.toml`` ``[tool.flwr.app.components]`` names both here).

* ``client_app``: a site trains and evaluates the stage the server asks for
  (``fedecg.federated.site_handlers``), applying the run plan's ``privacy`` itself:
  sample-level DP-SGD (``PrivateSite``) when ``privacy.mode`` is ``sample``, and client-side
  clipping (``client_clipping_mod``) of its train replies when the server asks for it;
* ``plan_server_app(plan)``: one model's federated run (``run_server``), its strategies wrapped
  in client-level DP (``ClientLevelDP``) when ``privacy.mode`` is ``client``;
* ``server_app``: what ``flwr run`` starts: the study its run config names (``config``,
  ``set``, ``model``, ``out``; ``fedecg.federated.datasource``) on the connected sites;
* ``run_study(config, out, sites=simulated() | deployed(grid))``: a whole study
  (``fedecg.study``) on virtual sites or a grid's, privacy always applied as the config says;
  ``run_sweep``: the privacy-utility study, one study per ε (``fedecg.privacy.sweep``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flwr.app import Context, Message
from flwr.clientapp import ClientApp
from flwr.clientapp.typing import Mod
from flwr.serverapp import Grid, ServerApp
from rich.console import Console

from fedecg.config.federated import StudyConfig
from fedecg.federated.datasource import run_models, study_from_run_config, study_out
from fedecg.federated.orchestration import (
    Progress,
    RunPlan,
    StrategyWrap,
    run_server,
    stages_for,
)
from fedecg.federated.simulation import Say, run_in_simulation
from fedecg.federated.site_handlers import (
    Site,
    errors_without_paths,
    handle_evaluate,
    handle_train,
)
from fedecg.io import (
    SHARED,
    OutputKind,
    atomic_write_json,
    atomic_write_text,
    claim_output,
    mark_output,
)
from fedecg.privacy.clipping import client_clipping_mod
from fedecg.privacy.sweep import (
    SWEEP_MODELS,
    TABLE_FILE,
    add_retention,
    budget_config,
    card_entry,
    check_private,
    epsilon_label,
    site_budgets,
    table_csv,
    utility_rows,
)
from fedecg.run_folder import RunFolder
from fedecg.study import Deployed, Simulated, Sites, drive_study

if TYPE_CHECKING:  # Opacus loads only when a run asks for DP: every site message starts a
    from fedecg.privacy.site_hook import PrivateSite  # new process, which stays light

log = logging.getLogger(__name__)


def private_site(plan: RunPlan, site: Site, context: Context,
                 global_round: int) -> PrivateSite | None:
    """The site's DP state for this message, or None when the run asks for no sample DP."""
    config = plan.config.privacy
    if config.mode != "sample" or not config.enabled:
        return None
    from fedecg.privacy.site_hook import PrivateSite

    return PrivateSite.open(config, plan, site.data, site.name, context.state,
                            (site.state_dir, site.index, global_round))


def client_level(plan: RunPlan) -> StrategyWrap | None:
    """Wrap every stage's strategy in client-level DP, or None when the run asks for none."""
    config = plan.config.privacy
    if config.mode != "client" or not config.enabled:
        return None
    from fedecg.privacy.client_dp import LEDGER_FILE, ClientLevelDP

    rounds = {stage.name: plan.config.federation.rounds.of(stage.name)
              for stage in stages_for(plan)}
    sites = plan.config.num_sites
    dp = ClientLevelDP.open(config, rounds, sites, Path(plan.out) / LEDGER_FILE)
    return lambda strategy: dp.wrap(strategy, sites)


def build_client_app(extra_train_mods: Sequence[Mod] = ()) -> ClientApp:
    """fedecg's ClientApp (``extra_train_mods`` run before its own, e.g. a test's faulty site)."""
    client = ClientApp()

    @client.train(mods=[*extra_train_mods, client_clipping_mod])
    def train(message: Message, context: Context) -> Message:
        with errors_without_paths():
            return handle_train(message, context, private_site)

    @client.evaluate()
    def evaluate(message: Message, context: Context) -> Message:
        with errors_without_paths():
            return handle_evaluate(message, context, private_site)

    return client


client_app = build_client_app()


def plan_server_app(plan: RunPlan, progress: Progress | None = None) -> ServerApp:
    """A ServerApp running ``plan`` (one model's federated run), privacy as its config says."""
    server = ServerApp()

    @server.main()
    def main(grid: Grid, context: Context) -> None:
        run_server(grid, plan, progress, client_level(plan))

    return server


server_app = ServerApp()


@server_app.main()
def main(grid: Grid, context: Context) -> None:
    """Run the run config's study on the connected sites."""
    serve_study(grid, dict(context.run_config), context.run_id)


def simulated() -> Simulated:
    """Virtual sites in Flower's simulation engine, running this module's apps."""
    def run(plan: RunPlan, progress: Progress | None) -> None:
        run_in_simulation(plan, plan_server_app(plan, progress), client_app)

    return Simulated(run)


def deployed(grid: Grid, models: list[str] | None = None) -> Deployed:
    """The sites ``grid`` connects (they run ``client_app``), with client-level DP as asked."""
    def run(plan: RunPlan, progress: Progress | None) -> None:
        run_server(grid, plan, progress, client_level(plan))

    return Deployed(grid, run, models)


def serve_study(grid: Grid, run_config: dict[str, Any], run_id: int = 0,
                progress: Progress | None = None) -> dict[str, Any]:
    """The study a ``flwr run`` config names, on ``grid`` (``run_study`` with ``deployed``);
    submitting it to the same folder again resumes it."""
    config = study_from_run_config(run_config)
    models = run_models(run_config, config)
    return run_study(config, study_out(run_config, config, run_id),
                     sites=deployed(grid, models), progress=progress)


def run_study(config: StudyConfig, out: Path, *, sites: Sites | None = None,
              resume: bool = False, say: Say | None = None, progress: Progress | None = None,
              console: Console | None = None) -> dict[str, Any]:
    """Run the whole study into ``out`` on ``sites`` (default ``simulated()``; or
    ``deployed(grid)``) and return its summary (``fedecg.study``). The apps apply the config's
    ``privacy``: a private config never trains without it."""
    return drive_study(config, Path(out), sites or simulated(), resume=resume,
                       say=say or log.info, progress=progress, console=console)


def run_sweep(config: StudyConfig, epsilons: Sequence[float], out: Path, *,
              say: Say | None = None, progress: Progress | None = None,
              models: Sequence[str] = tuple(SWEEP_MODELS)) -> list[dict[str, Any]]:
    """Run (or continue) the study of ``models`` (the three by default) at each ε into
    ``out``; write the table; return its rows."""
    out = Path(out)
    claim_output(out, OutputKind.SWEEP, existing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    mark_output(out, OutputKind.SWEEP)
    rows: list[dict[str, Any]] = []
    runs: dict[str, Any] = {}
    for epsilon in epsilons:
        label = epsilon_label(epsilon)
        run_dir = RunFolder(out / f"epsilon-{label}")
        if not run_dir.summary.is_file():
            if say is not None:
                say(f"epsilon {label}: federated study into {run_dir.path}")
            run_study(budget_config(config, epsilon, models), run_dir.path,
                      resume=run_dir.path.is_dir(), say=say, progress=progress)
        summary = run_dir.read_summary()
        budgets = site_budgets(run_dir.path)
        check_private(epsilon, budgets, run_dir.path)
        rows += utility_rows(epsilon, summary, budgets)
        runs[label] = {"study": str(run_dir.path), "sites": budgets,
                       "model_card_privacy": card_entry(run_dir.path, budgets)}
    add_retention(rows)
    atomic_write_text(out / TABLE_FILE, table_csv(rows), SHARED)
    written = [{k: v for k, v in row.items() if k != "target_epsilon"} for row in rows]
    atomic_write_json(RunFolder(out).summary, {"epsilons": [epsilon_label(e) for e in epsilons],
                                           "rows": written, "runs": runs}, SHARED)
    return rows
