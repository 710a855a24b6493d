"""What every subcommand shares: the app, the console, and turning errors into one line."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NoReturn, ParamSpec, TypeVar

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


class ConsoleWarnings(logging.Handler):
    """fedecg's logged warnings as yellow ``warning:`` lines on the console."""

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)

    def emit(self, record: logging.LogRecord) -> None:
        """Print one warning."""
        console.print(f"[yellow]warning:[/] {record.getMessage()}", highlight=False,
                      soft_wrap=True)


@contextlib.contextmanager
def shown_warnings() -> Iterator[None]:
    """While inside, warnings logged under ``fedecg`` are printed on the console."""
    handler = ConsoleWarnings()
    logger = logging.getLogger("fedecg")
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)


def friendly_errors(command: Callable[P, R]) -> Callable[P, R]:
    """Show ``command``'s logged warnings, and turn a ``FedecgError`` it raises, or an
    ``OSError`` of the file system (an unwritable ``--out``, a full disk), into one red line
    and exit code 1."""

    @functools.wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        threads_before = set(threading.enumerate())
        try:
            with shown_warnings():
                return command(*args, **kwargs)
        except (KeyboardInterrupt, SystemExit) as exc:  # Ctrl-C, or SIGTERM in a simulation
            code = 130 if isinstance(exc, KeyboardInterrupt) else _exit_code(exc)
            console.print("[bold red]interrupted:[/] finished work is kept; rerun train with "
                          "the same --out, or simulate with --resume RUN, to continue",
                          highlight=False, soft_wrap=True)
            _exit_if_threads_linger(threads_before, code)
            raise typer.Exit(code=code) from None
        except FedecgError as exc:
            _fail(str(exc).splitlines() or [type(exc).__name__])
        except OSError as exc:
            where = exc.filename if exc.filename is not None else "a file"
            _fail([f"{where}: {exc.strerror or exc} ({type(exc).__name__}); check that its "
                   "folder exists, that you may write there and that the disk has space"])

    return wrapper


def record_command(run_dir: Path, started: float, resumed: bool = False) -> None:
    """Write ``run_dir/provenance.json``: this command line, its start and end, versions, and
    whether it ``resumed`` an interrupted run.

    Run from the shell, the arguments are the shell's; called from Python (tests, scripts)
    only the subcommand is known.
    """
    from fedecg.report.provenance import record_run

    if Path(sys.argv[0]).name in ("fedecg", "__main__.py"):
        argv = sys.argv[1:]
    else:
        context = click.get_current_context(silent=True)
        argv = [context.info_name if context else "?", "(called from Python)"]
    record_run(run_dir, argv, started, time.time(), resumed)
def _exit_code(exc: SystemExit) -> int:
    return exc.code if isinstance(exc.code, int) else 1


def _exit_if_threads_linger(before: set[threading.Thread], code: int) -> None:
    """Exit the process now when the command left non-daemon threads running (an interrupted
    Flower ServerApp waits for replies that never come, and would keep the process alive)."""
    lingering = [t for t in threading.enumerate() if t not in before and not t.daemon]
    if lingering:
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _fail(lines: list[str]) -> NoReturn:
    for line in lines:
        console.print(f"[bold red]error:[/] {line}", highlight=False, soft_wrap=True)
    raise typer.Exit(code=1)
