"""What every subcommand shares: the app, the console, and turning errors into one line."""

from __future__ import annotations

import functools
from collections.abc import Callable
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
