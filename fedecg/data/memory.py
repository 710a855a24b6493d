"""Handing freed memory back to the system, so that the resident set follows the live data.

glibc's malloc keeps freed blocks in its heap (the size above which a block gets a mapping of
its own, and so goes back to the system when freed, rises to 32 MiB as such blocks are freed),
and Arrow's pool keeps what it freed. Reading a table in blocks frees as much as it keeps:
without this, half a GiB of freed blocks stayed resident after reading 12M ``labevents`` rows.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Callable

import pyarrow as pa


def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim`` (None on a C library without it)."""
    try:
        return ctypes.CDLL(ctypes.util.find_library("c")).malloc_trim
    except (OSError, AttributeError, TypeError):
        return None


_TRIM = _malloc_trim()


def release_freed_memory() -> None:
    """Return the memory that malloc and Arrow's pool hold free to the system (a few ms)."""
    pa.default_memory_pool().release_unused()
    if _TRIM is not None:
        _TRIM(0)
