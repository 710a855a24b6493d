"""``fedecg server ...`` (the coordinating center) and ``fedecg node ...`` (a hospital)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from fedecg.cli.common import console, friendly_errors
from fedecg.cli.progress import LOG_JSON_HELP, QUIET_HELP, RunProgress, output_mode
from fedecg.config.base import load_config
from fedecg.config.federated import StudyConfig
from fedecg.run_folder import RunFolder

server = typer.Typer(help="The coordinating center: CA, SuperLink, node registry, studies.",
                     no_args_is_help=True)
node = typer.Typer(help="A hospital: node identity, pre-flight checks, its SuperNode.",
                   no_args_is_help=True)

KIT = typer.Option(..., "--kit", help="The kit folder (keys, certificates, logs, PID files).")


@server.command("init")
@friendly_errors
def server_init(
    kit: Path = KIT,
    hosts: list[str] = typer.Option(..., "--host", help="A name or address hospitals dial "
                                    "(repeat for each); the certificate covers them all."),
    days: int = typer.Option(365, help="Days the server certificate is valid."),
    renew: bool = typer.Option(False, help="Keep the CA, issue a new server certificate."),
) -> None:
    """Create the federation's CA and the SuperLink's TLS certificate."""
    from fedecg.deploy.certs import check_days
    from fedecg.deploy.superlink import init_server

    check_days(days)  # before the CA is written
    made = init_server(kit, hosts, days=days, renew=renew)
    console.print(f"wrote {made.tls}: give {made.ca} to every hospital; keep ca.key offline")


@server.command("start")
@friendly_errors
def server_start(
    kit: Path = KIT,
    address: str = typer.Option(..., help="HOST:PORT hospitals dial (certificate must cover "
                                "HOST)."),
    bind: str | None = typer.Option(None, help="Interface to listen on (default: HOST)."),
    control: str | None = typer.Option(None, help="Loopback HOST:PORT of the SuperLink's own "
                                       "APIs, for this machine's commands (default: a free "
                                       "port on 127.0.0.1)."),
) -> None:
    """Start the SuperLink on loopback (TLS, SuperNode authentication) and the Fleet gateway
    on ADDRESS, in the background: hospitals reach only the Fleet API."""
    from fedecg.deploy.superlink import ServerKit, start_superlink

    server_kit = ServerKit(kit)
    pid = start_superlink(server_kit, address, bind, control)
    console.print(f"Fleet gateway on {address} (PID {server_kit.gateway.pid()}), SuperLink "
                  f"on {server_kit.control_address()} (PID {pid}, this machine only); logs "
                  f"{server_kit.superlink.log_file.parent}")


@server.command("register")
@friendly_errors
def server_register(
    public_key: Path = typer.Argument(..., help="A hospital's node.pub."),
    kit: Path = KIT,
    name: str | None = typer.Option(None, help="A name for the node in the registry."),
) -> None:
    """Admit a hospital's node: register its public key with the running SuperLink."""
    from fedecg.deploy.superlink import ServerKit, register_node

    node_id = register_node(ServerKit(kit), public_key, name)
    console.print(f"registered {public_key} as node {node_id}")


@server.command("nodes")
@friendly_errors
def server_nodes(kit: Path = KIT) -> None:
    """List the registered nodes and whether they are online."""
    from fedecg.deploy.superlink import ServerKit, list_nodes

    table = Table(title="SuperNodes")
    for column in ("node id", "status", "online since", "offline since"):
        table.add_column(column)
    for entry in list_nodes(ServerKit(kit)):
        table.add_row(str(entry["node-id"]), entry["status"], entry["online-at"],
                      entry["offline-at"])
    console.print(table)


def submit_reporter(config: StudyConfig, out: Path, progress: RunProgress,
                    ) -> Callable[[int, int], None]:
    """``submit_study``'s progress hook: when the rounds done go up, a line for the newest
    round, from the metrics the ServerApp writes into ``out``."""
    from fedecg.cli.federated_commands import report_round

    seen = {"done": 0}

    def on_poll(done: int, total: int) -> None:
        progress.total = total
        event = newest_round(out)
        if done <= seen["done"] or event is None:
            return
        seen["done"] = done
        event["rounds"] = config.federation.rounds.of(event["stage"])
        report_round(progress, done, event, several_seeds=len(config.seeds) > 1)

    return on_poll


def newest_round(out: Path) -> dict[str, Any] | None:
    """The lines of the last finished round of the most recently written federated run."""
    runs = sorted(((key, run.metrics) for key, run in RunFolder(out).federated_runs().items()
                   if run.metrics.is_file()), key=lambda item: item[1].stat().st_mtime)
    if not runs:
        return None
    (seed, model), path = runs[-1]
    lines = [json.loads(text) for text in path.read_text().splitlines() if text.strip()]
    ends = [x for x in lines if x.get("kind") == "evaluate" and x.get("site") == "all"]
    if not ends:
        return None
    last = ends[-1]
    return {"model": model, "seed": seed,
            "stage": last["stage"], "round": last["stage_round"],
            "lines": [x for x in lines if x.get("round") == last["round"]]}


@server.command("submit")
@friendly_errors
def server_submit(
    kit: Path = KIT,
    study: Path = typer.Option(..., help="Study YAML (data.deployed: the hospitals' stores)."),
    out: Path = typer.Option(..., help="Study folder (resubmitting the same one resumes it)."),
    app: Path | None = typer.Option(None, help="Flower app folder (default: this project)."),
    model: str = typer.Option("", help="Models, comma-separated (default: train.models)."),
    overrides: list[str] | None = typer.Option(None, "--set", help="Override a setting."),
    quiet: bool = typer.Option(False, "--quiet", help=QUIET_HELP),
    log_json: bool = typer.Option(False, "--log-json", help=LOG_JSON_HELP),
) -> None:
    """Run a study on the federation and wait for it: a line per round, then its results."""
    from fedecg.cli.federated_commands import results_table
    from fedecg.deploy.submit import submit_study
    from fedecg.deploy.superlink import ServerKit

    settings = load_config(StudyConfig, study, list(overrides or []))
    progress = RunProgress(0, "round", output_mode(quiet, log_json), console)
    summary = submit_study(ServerKit(kit), study, out, app=app, model=model,
                           overrides=list(overrides or []),
                           progress=submit_reporter(settings, out, progress))
    console.print(results_table(summary, "test macro AUROC (sites' own test splits, "
                                         "example-weighted)"))
    deployment = summary["deployment"]
    if deployment["events"]:
        console.print(events_table(deployment["events"]))
    console.print(f"study finished: {len(deployment['sites'])} sites reported, "
                  f"{len(deployment['events'])} dropout/rejection event(s); report "
                  f"{Path(out) / 'report.html'}")


def events_table(events: list[dict]) -> Table:
    """Each dropout and rejected update: model, stage, round, site, node, reason."""
    table = Table(title="site events")
    for column in ("model", "stage", "round", "site", "event", "reason"):
        table.add_column(column)
    for event in events:
        table.add_row(event["model"], event["stage"], str(event["round"]),
                      f"{event['site']} (node {event['node_id']})", event["kind"],
                      event["reason"])
    return table


@server.command("stop")
@friendly_errors
def server_stop(kit: Path = KIT) -> None:
    """Stop the kit's SuperLink."""
    from fedecg.deploy.superlink import ServerKit, stop_superlink

    console.print("SuperLink stopped" if stop_superlink(ServerKit(kit)) else "no SuperLink ran")


@node.command("keygen")
@friendly_errors
def node_keygen(kit: Path = KIT,
                overwrite: bool = typer.Option(False, help="Replace an existing identity.")
                ) -> None:
    """Create this node's key pair; send node.pub to the coordinating center."""
    from fedecg.deploy.node_keys import create_node_keys

    console.print(f"wrote {create_node_keys(kit, overwrite)}: send it to the coordinating "
                  "center; node.key stays here")


def _study(path: Path | None) -> StudyConfig | None:
    return None if path is None else load_config(StudyConfig, path, [])


SUPERLINK = typer.Option(..., "--superlink", help="The SuperLink's HOST:PORT.")
CA = typer.Option(None, "--ca", help="The federation's ca.crt (default: system trust store).")
DATA_DIR = typer.Option(..., "--data-dir", help="This site's store (fedecg prepare --out).")
STUDY = typer.Option(None, "--study", help="The study YAML, to check the store against it.")


@node.command("check")
@friendly_errors
def node_check(kit: Path = KIT, superlink: str = SUPERLINK, ca: Path | None = CA,
               data_dir: Path = DATA_DIR, study: Path | None = STUDY) -> None:
    """Check key, CA, store and the SuperLink's certificate, without starting anything."""
    from fedecg.deploy.supernode import NodeKit, check_node

    store = check_node(NodeKit(kit), superlink, ca, data_dir, _study(study))
    console.print(f"ready: store {store.manifest.site_name} ({store.manifest.n_records} "
                  f"records), SuperLink {superlink} verified")


@node.command("start")
@friendly_errors
def node_start(
    kit: Path = KIT, superlink: str = SUPERLINK, ca: Path | None = CA,
    data_dir: Path = DATA_DIR, study: Path | None = STUDY,
    site_name: str | None = typer.Option(None, help="Name in results (default: the store's)."),
    port: int = typer.Option(9094, help="Local port of the SuperNode's ClientApp API."),
    check: bool = typer.Option(True, help="Run the pre-flight checks first."),
) -> None:
    """Start this hospital's SuperNode in the background over its store."""
    from fedecg.deploy.supernode import NodeKit, start_supernode

    node_kit = NodeKit(kit)
    node_id = start_supernode(node_kit, superlink, ca, data_dir, site_name=site_name,
                              port=port, study=_study(study), preflight=check)
    console.print(f"admitted as node {node_id}; log {node_kit.supernode.log_file}")


@node.command("stop")
@friendly_errors
def node_stop(kit: Path = KIT) -> None:
    """Stop this hospital's SuperNode."""
    from fedecg.deploy.supernode import NodeKit, stop_supernode

    console.print("SuperNode stopped" if stop_supernode(NodeKit(kit)) else "no SuperNode ran")


def register(app: typer.Typer) -> None:
    """Add ``fedecg server`` and ``fedecg node`` to ``app``."""
    app.add_typer(server, name="server")
    app.add_typer(node, name="node")


__all__ = ["register"]
