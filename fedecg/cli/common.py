"""What every subcommand shares: the app, the console, and turning errors into one line."""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Callable, Iterator
from typing import ParamSpec, TypeVar

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
    """Show ``command``'s logged warnings, and turn a ``FedecgError`` it raises into one red
    line and exit code 1."""

    @functools.wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            with shown_warnings():
                return command(*args, **kwargs)
        except FedecgError as exc:
            for line in str(exc).splitlines() or [type(exc).__name__]:
                console.print(f"[bold red]error:[/] {line}", highlight=False, soft_wrap=True)
            raise typer.Exit(code=1) from None

    return wrapper
