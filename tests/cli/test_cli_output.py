"""What the CLI prints a person: report headers, defaults in --help (typer's CliRunner)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from builders.raw_sites import make_generic_site, make_mimic_site
from typer.testing import CliRunner

from fedecg.cli import app
from fedecg.run_folder import RunFolder

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


def test_round_lines_count_on_across_the_studies_of_a_sweep(capsys) -> None:
    """``fedecg sweep`` runs one study per ε through one reporter: done counts on, ETA ends at 0."""
    from rich.console import Console

    from fedecg.cli.federated_commands import round_plan, round_reporter
    from fedecg.cli.progress import Output, RunProgress
    from fedecg.config.federated import StudyConfig

    config = StudyConfig.model_validate({
        "train": {"models": ["transfer"]},
        "federation": {"rounds": {"pretrain": 1, "lab": 1, "diagnosis": 1}}})
    assert round_plan(config) == ({(0, "transfer"): 0}, 3)
    progress = RunProgress(6, "round", Output.JSON, Console(stderr=True))
    report = round_reporter(config, progress)
    for _study in range(2):
        for global_round, stage in enumerate(("pretrain", "lab", "diagnosis"), start=1):
            report({"model": "transfer", "stage": stage, "round": 1, "rounds": 1,
                    "global_round": global_round, "seed": 0, "lines": [
                        {"kind": "train", "site_index": 0, "round": global_round,
                         "num-examples": 10},
                        {"kind": "evaluate", "site_index": -1, "site": "all",
                         "round": global_round, "val-loss": 0.5, "val-lab-auroc": 0.6},
                        {"kind": "selected", "round": global_round,
                         "selected-stage-round": 1, "rounds-trained": 1,
                         "rounds-planned": 1}]})
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [x["done"] for x in lines] == [1, 2, 3, 4, 5, 6]
    assert lines[1]["val_lab_auroc"] == 0.6 and lines[0]["val_loss"] == 0.5
    assert lines[0]["sites"] == 1 and lines[0]["kept_round"] == 1
    assert lines[0]["stopped_early"] is False
    assert lines[-1]["eta_seconds"] == 0.0 and lines[0]["eta_seconds"] >= 0.0


def test_server_submit_prints_a_line_per_round_from_the_study_folder(tmp_path: Path,
                                                                     capsys) -> None:
    from rich.console import Console

    from fedecg.cli.deploy_commands import submit_reporter
    from fedecg.cli.progress import Output, RunProgress
    from fedecg.config.federated import StudyConfig

    config = StudyConfig.model_validate({"federation": {"rounds": {"lab": 2}}})
    run = RunFolder(tmp_path / "out").federated_run(0, "transfer").path
    run.mkdir(parents=True)
    on_poll = submit_reporter(config, tmp_path / "out",
                              RunProgress(0, "round", Output.JSON, Console(stderr=True)))
    on_poll(0, 9)  # nothing finished yet

    def finish(round_: int, stage_round: int, auroc: float) -> None:
        lines = [{"model": "transfer", "stage": "lab", "round": round_,
                  "stage_round": stage_round, "kind": kind, "site_index": index, "site": site,
                  "num-examples": 10, "val-loss": 0.4, "val-lab-auroc": auroc}
                 for kind, index, site in (("train", 0, "site0"), ("evaluate", -1, "all"))]
        with RunFolder(run).metrics.open("a") as file:
            file.write("".join(json.dumps(line) + "\n" for line in lines))

    finish(9, 1, 0.61)
    on_poll(1, 9)
    on_poll(1, 9)  # polled again before the next round: no second line
    finish(10, 2, 0.66)
    on_poll(2, 9)
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [(x["round"], x["rounds"], x["done"], x["total"], x["val_lab_auroc"])
            for x in lines] == [(1, 2, 1, 9, 0.61), (2, 2, 2, 9, 0.66)]
