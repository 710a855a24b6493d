"""The run folder: every file a run or study writes, each named once here, and its summary.

``RunFolder(path)`` is a folder that ``fedecg train`` writes (one run) or that ``fedecg
simulate`` / ``fedecg server submit`` write (a study; one ε of a privacy sweep is one too).
Each federated run inside a study (``RunFolder.federated_run``) is a run folder as well: its
``metrics.jsonl`` and ``result.json``. ``Summary`` is what ``summary.json`` holds;
``read_summary`` turns a file that is missing, not JSON or not a summary into one line naming
the file and the field. ``prepare_training`` and ``prepare_study`` create a run folder, or
check that an existing one may be resumed.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from fedecg.config.base import dump_config, read_yaml
from fedecg.config.federated import StudyConfig
from fedecg.config.train import TrainConfig
from fedecg.errors import FederationError, InputFileError, OutputExistsError, TableError
from fedecg.io import SHARED, OutputKind, atomic_write_json, claim_output, mark_output

log = logging.getLogger(__name__)
MODEL_KEYS = ("diagnosis_macro_auroc", "lab_macro_auroc")


class Result(BaseModel):
    """One model's flat metrics on one test split (``fedecg.training.evaluate.flatten``); the
    per-label values, CIs and counts are kept as written."""

    model_config = ConfigDict(extra="allow")

    diagnosis_macro_auroc: float | None = None
    lab_macro_auroc: float | None = None
    diagnosis_macro_auroc_ci: list[float | None] | None = None
    lab_macro_auroc_ci: list[float | None] | None = None
    n_test: int | float | None = None  # a mean over seeds may not be whole
    per_store: dict[str, Result | None] | None = None

    @property
    def has_metrics(self) -> bool:
        """Whether it holds a macro AUROC (what makes it a model entry of the report)."""
        return any(key in self.model_fields_set for key in MODEL_KEYS)


class LocalOnly(Result):
    """The local-only baseline: each site's own model (``sites``) and their means."""

    sites: dict[str, Result | None] = {}


class StudyResults(BaseModel):
    """A study's results: each model federated, on each site, and the baselines."""

    federated: dict[str, Result] | None = None
    sites: dict[str, dict[str, Result | None]] = {}
    pooled: dict[str, Result] = {}
    local_only: dict[str, LocalOnly] = {}
    naive: Result | None = None


class SeedResult(StudyResults):
    """One seed of a study (``Summary.by_seed``)."""

    federated: dict[str, Result]


class StoreEntry(BaseModel):
    """A store a centralized run trained on."""

    path: str
    site: str


class Summary(StudyResults):
    """``summary.json``: of a run (``fedecg train``: one ``Result`` per model name at the top
    level, ``naive``, ``seed``, ``models`` the names, ``stores``) or of a study (the seeds
    averaged, ``seeds``, ``model_names``, ``by_seed`` with several seeds, ``models`` the
    report's entries, and ``partition`` or ``deployment``)."""

    model_config = ConfigDict(extra="allow")
    __pydantic_extra__: dict[str, Result]  # a run's entries, one per model name

    models: list[str] | dict[str, Result] = []
    seed: int | None = None
    stores: list[StoreEntry] = []
    seeds: list[int] = []
    model_names: list[str] = []
    by_seed: dict[str, SeedResult] = {}
    partition: dict[str, Any] | None = None
    deployment: dict[str, Any] | None = None

    @property
    def is_study(self) -> bool:
        """A study's summary (``federated``, ``sites``, ...), not a centralized run's."""
        return self.federated is not None

    def model_entries(self) -> dict[str, Result]:
        """The entries the report compares: a study's ``models``, a run's model names (and
        ``naive``); only those holding a macro AUROC."""
        found = (self.models if isinstance(self.models, dict)
                 else {**(self.model_extra or {}), "naive": self.naive})
        return {name: entry for name, entry in found.items()
                if entry is not None and entry.has_metrics}

    def as_dict(self) -> dict[str, Any]:
        """The summary's keys and values as its file holds them (absent keys stay absent)."""
        return self.model_dump(exclude_unset=True)


@dataclass(frozen=True)
class RunFolder:
    """The paths of a run folder (module docstring)."""

    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    @property
    def summary(self) -> Path:
        """``summary.json``: the test results (``Summary``); written last, so it marks a
        finished run."""
        return self.path / "summary.json"

    @property
    def metrics(self) -> Path:
        """``metrics.jsonl``: one line per epoch (centralized) or round, site and stage."""
        return self.path / "metrics.jsonl"

    @property
    def config(self) -> Path:
        """``config.yaml``: the resolved config of the run."""
        return self.path / "config.yaml"

    @property
    def run_info(self) -> Path:
        """``run.json``: the stores and models of a centralized run (to check a resume)."""
        return self.path / "run.json"

    @property
    def unfinished(self) -> bool:
        """A centralized run began here and did not finish: the same command resumes it."""
        return self.run_info.is_file() and not self.summary.is_file()

    @property
    def result(self) -> Path:
        """``result.json``: a federated run's or deployed study's status (and reason)."""
        return self.path / "result.json"

    @property
    def report(self) -> Path:
        """``report.html``."""
        return self.path / "report.html"

    @property
    def provenance(self) -> Path:
        """``provenance.json``: when, how long, which command and versions."""
        return self.path / "provenance.json"

    @property
    def model(self) -> Path:
        """``model/``: the exported inference model and its card."""
        return self.path / "model"

    @property
    def partition(self) -> Path:
        """``partition/``: a simulated study's sites."""
        return self.path / "partition"

    @property
    def checkpoints(self) -> Path:
        """``checkpoints/``: a centralized run's per-epoch checkpoints and test results."""
        return self.path / "checkpoints"

    @property
    def cv_summary(self) -> Path:
        """``cv_summary.json``: a cross-validation's out-of-fold results (``fedecg train --cv``)."""
        return self.path / "cv_summary.json"

    @property
    def oof_predictions(self) -> Path:
        """``oof_predictions.parquet``: a cross-validation's out-of-fold probabilities."""
        return self.path / "oof_predictions.parquet"

    def fold(self, fold: int) -> RunFolder:
        """``fold-<fold>/``: one fold of a cross-validation (its metrics and checkpoints)."""
        return RunFolder(self.path / f"fold-{fold}")

    def seed(self, seed: int) -> Path:
        """``seed-<seed>/``: one seed of a study (its runs and baselines)."""
        return self.path / f"seed-{seed}"

    def federated_run(self, seed: int, model: str) -> RunFolder:
        """The folder of one model's federated run in seed ``seed``."""
        return RunFolder(self.seed(seed) / model / "federated")

    def federated_runs(self) -> dict[tuple[int, str], RunFolder]:
        """Every federated run of the study that has started: ``(seed, model)`` → its folder."""
        runs = {}
        for path in sorted(self.path.glob("seed-*/*/federated")):
            seed = path.parent.parent.name.removeprefix("seed-")
            if seed.isdigit():
                runs[(int(seed), path.parent.name)] = RunFolder(path)
        return runs

    def read_summary(self) -> Summary:
        """``summary.json`` checked: ``InputFileError`` if it is missing, ``TableError`` (one
        line: the file and the field) if it is not a summary fedecg writes."""
        path = self.summary
        if not path.is_file():
            raise InputFileError(f"{path}: summary.json not found; a run report needs the "
                                 "summary that `fedecg train` or `fedecg simulate` writes at "
                                 "the end of a run (was the run interrupted? run again with "
                                 "the same --out, or `fedecg simulate --resume RUN`)")
        try:
            data = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise TableError(f"{path}: not valid JSON ({exc}); expected the object that "
                             "`fedecg train` or `fedecg simulate` writes") from None
        return _validated(data, path)

    def write_summary(self, summary: dict[str, Any]) -> Summary:
        """Check ``summary`` (a ``Summary``) and write it, readable by the group."""
        checked = _validated(summary, self.summary)
        atomic_write_json(self.summary, summary, SHARED)
        return checked


def _validated(data: Any, path: Path) -> Summary:
    if not isinstance(data, dict):
        raise TableError(f"{path}: holds a {type(data).__name__}; expected an object mapping "
                         "each model name to its metrics")
    try:
        return Summary.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        field = ".".join(str(part) for part in error["loc"]) or "(top level)"
        raise TableError(f"{path}: field {field}: {error['msg']} (found "
                         f"{json.dumps(error['input'], default=str)[:60]}); expected the "
                         "summary that `fedecg train` or `fedecg simulate` writes") from None


def prepare_training(folder: RunFolder, config: TrainConfig, stores: Iterable[Path],
                     overwrite: bool) -> None:
    """Create a centralized run folder, or accept it to resume an unfinished run with the
    same settings. ``overwrite`` replaces only a run folder fedecg wrote, never a store."""
    stores = list(stores)
    run_info = {"stores": [str(Path(p).resolve()) for p in stores], "models": config.models}
    existing = claim_output(folder.path, OutputKind.RUN, inputs=stores, overwrite=overwrite,
                            existing_ok=True)
    if existing and overwrite:
        shutil.rmtree(folder.path)
    elif existing:
        if folder.summary.is_file():
            raise OutputExistsError(f"{folder.path}: holds a finished run; choose another "
                                    "--out or pass --overwrite")
        _check_resumable(folder, config, run_info)
        log.info("%s: resuming an unfinished run from its checkpoints", folder.path)
    folder.checkpoints.mkdir(parents=True, exist_ok=True)
    mark_output(folder.path, OutputKind.RUN)
    dump_config(config, folder.config)
    atomic_write_json(folder.run_info, run_info)


def _check_resumable(folder: RunFolder, config: TrainConfig, run_info: dict[str, Any]) -> None:
    if not folder.config.is_file() or not folder.run_info.is_file():
        raise OutputExistsError(f"{folder.path}: an unfinished run without its "
                                f"{folder.config.name} or {folder.run_info.name}; pass "
                                "--overwrite to start it again")
    previous = read_yaml(folder.config)
    current = config.model_dump(mode="json")
    changed = [key for key in sorted(set(previous) | set(current))
               if previous.get(key) != current.get(key)]
    saved = json.loads(folder.run_info.read_text())
    changed += [key for key in run_info if saved.get(key) != run_info[key]]
    if changed:
        raise OutputExistsError(f"{folder.path}: holds an unfinished run whose "
                                f"{', '.join(changed)} differ from this one; rerun with the "
                                "same settings to resume, or pass --overwrite to start again")


def prepare_study(folder: RunFolder, config: StudyConfig, resume: bool) -> None:
    """Create a study folder, or check that it holds this study when resuming."""
    inputs = [config.data.store] if config.data.store is not None else []
    existing = claim_output(folder.path, OutputKind.STUDY, inputs=inputs, existing_ok=True)
    if resume:
        if not existing or not folder.config.is_file():
            raise FederationError(f"{folder.path}: no study here; --resume needs a study "
                                  "folder made by `fedecg simulate`")
        if read_yaml(folder.config) != config.model_dump(mode="json"):
            raise FederationError(f"{folder.path}: its {folder.config.name} differs from this "
                                  "config; resume without --config/--set, or start a new --out")
        return
    if existing:
        raise OutputExistsError(f"{folder.path}: already holds a study; choose another --out, "
                                "or pass --resume RUN to continue it")
    folder.path.mkdir(parents=True, exist_ok=True)
    mark_output(folder.path, OutputKind.STUDY)
    dump_config(config, folder.config)
