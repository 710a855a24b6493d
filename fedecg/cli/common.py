"""What every subcommand shares: the app, the console, and turning errors into one line."""

from __future__ import annotations

import functools
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import ParamSpec, TypeVar

import click
import typer
from rich.console import Console

from fedecg.errors import FedecgError

app = typer.Typer(
    name="fedecg",
    help="Federated training of ECG models that carry clinical knowledge.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console(stderr=True)

P = ParamSpec("P")
R = TypeVar("R")


def friendly_errors(command: Callable[P, R]) -> Callable[P, R]:
    """Turn a ``FedecgError`` raised by ``command`` into one red line and exit code 1."""

    @functools.wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except FedecgError as exc:
            for line in str(exc).splitlines() or [type(exc).__name__]:
                console.print(f"[bold red]error:[/] {line}", highlight=False, soft_wrap=True)
            raise typer.Exit(code=1) from None

    return wrapper


def record_command(run_dir: Path, started: float) -> None:
    """Write ``run_dir/provenance.json``: this command line, its start and end, versions.

    Run from the shell, the arguments are the shell's; called from Python (tests, scripts)
    only the subcommand is known.
    """
    from fedecg.report.provenance import record_run

    if Path(sys.argv[0]).name in ("fedecg", "__main__.py"):
        argv = sys.argv[1:]
    else:
        context = click.get_current_context(silent=True)
        argv = [context.info_name if context else "?", "(called from Python)"]
    record_run(run_dir, argv, started, time.time())
