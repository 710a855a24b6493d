"""What every subcommand shares: the app, the console, and turning errors into one line."""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Callable, Iterator
from typing import NoReturn, ParamSpec, TypeVar

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
        try:
            with shown_warnings():
                return command(*args, **kwargs)
        except FedecgError as exc:
            _fail(str(exc).splitlines() or [type(exc).__name__])
        except OSError as exc:
            where = exc.filename if exc.filename is not None else "a file"
            _fail([f"{where}: {exc.strerror or exc} ({type(exc).__name__}); check that its "
                   "folder exists, that you may write there and that the disk has space"])

    return wrapper


def _fail(lines: list[str]) -> NoReturn:
    for line in lines:
        console.print(f"[bold red]error:[/] {line}", highlight=False, soft_wrap=True)
    raise typer.Exit(code=1)
