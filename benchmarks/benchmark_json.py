"""What every benchmark does with its result: print it as JSON and write it atomically."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fedecg.io import atomic_write_json


def emit(result: dict[str, Any], out: Path | None) -> None:
    """Print ``result`` as indented JSON and, with ``out``, write it there atomically."""
    print(json.dumps(result, indent=2))
    if out is not None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(Path(out), result)
