"""What the CLI prints a person: report headers, defaults in --help (typer's CliRunner)."""

from __future__ import annotations

import re
from pathlib import Path

from fixtures.builders import make_generic_site, make_mimic_site
from typer.testing import CliRunner

from fedecg.cli import app

runner = CliRunner()


def test_validate_names_the_folders_it_read_not_a_python_repr(tmp_path: Path) -> None:
    ecg_root, mimic_root = make_mimic_site(tmp_path / "m")
    result = runner.invoke(app, ["validate", str(ecg_root), "--mimic-root", str(mimic_root)])
    assert result.exit_code == 0, result.output
    assert _words(result.output).startswith(
        f"data report {ecg_root} (MIMIC-IV-ECG) with {mimic_root} (MIMIC-IV) (mimic)")
    site = make_generic_site(tmp_path / "g")
    generic = runner.invoke(app, ["validate", str(site)])
    assert _words(generic.output).startswith(f"data report {site} (generic site folder)")
    assert "Input(" not in result.output + generic.output


def test_help_names_the_defaults(tmp_path: Path) -> None:
    synth = _words(runner.invoke(app, ["synth", "--help"]).output)
    assert re.search(r"--sites INTEGER Number of hospitals .*\[default: 4\]", synth)
    simulate = _words(runner.invoke(app, ["simulate", "--help"]).output)
    for words in ("built-in defaults", "the config's seeds, [0]", "quickstart: true",
                  "--quiet", "--log-json"):
        assert words in simulate, words


def _words(text: str) -> str:
    """The text with rich's box lines and wrapping removed."""
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", text).split())
