"""A deployed study on the in-process grid: hospitals' own stores, faults, and the study folder.

Three sites each serve their own store (``data-dir``), as SuperNodes do; ``FaultyGrid`` lets a
site send a poisoned update, fail, or never answer. The real ServerApp logic
(``serve_study``) and the real ClientApp run in this process.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from builders.site_store import SCHEMA, make_store
from builders.tiny import TINY_TRAIN
from flwr.app import Array, ArrayRecord, Error, Message

from fedecg.app import client_app
from fedecg.errors import FederationError
from fedecg.federated import keys
from fedecg.federated.checkpoint import load_checkpoint
from fedecg.federated.inprocess import InProcessGrid
from fedecg.federated.orchestration import read_result
from fedecg.models.io import load_inference_model
from fedecg.run_folder import RunFolder

SITES = 3


@pytest.fixture(scope="module")
def stores(tmp_path_factory) -> list[Path]:
    root = tmp_path_factory.mktemp("hospitals")
    return [make_store(root / f"h{i}", n_patients=24, seed=10 + i, site_name=f"hospital-{i}",
                       schema=SCHEMA) for i in range(SITES)]


def study_file(tmp_path: Path, **federation) -> Path:
    """A deployed study of the transfer model, one round per stage."""
    study = {"data": {"deployed": {"sites": SITES, "prepare": SCHEMA.model_dump(mode="json")}},
             "federation": {"rounds": {"pretrain": 1, "lab": 1, "diagnosis": 1},
                            "min_sites": 2, "round_timeout_s": 5, "connect_timeout_s": 0,
                            **federation},
             "train": {**TINY_TRAIN, "models": ["transfer"]}}
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(study))
    return path


class FaultyGrid(InProcessGrid):
    """The in-process grid, where ``faults[site index](message, reply)`` may replace a site's
    train reply (return None: the site never answers), and ``final_faults`` its reply to the
    final evaluation."""

    def __init__(self, stores: list[Path], faults=None, final_faults=None) -> None:
        super().__init__(client_app, [{keys.NODE_DATA_DIR: str(s), keys.NODE_SITE_INDEX: i}
                                      for i, s in enumerate(stores)])
        self.faults = faults or {}
        self.final_faults = final_faults or {}
        self.replies: list[Message] = []

    def send_and_receive(self, messages, *, timeout=None):
        out = []
        for message in messages:
            reply = super().send_and_receive([message], timeout=timeout)[0]
            site = message.metadata.dst_node_id - 100
            final = message.content[keys.CONFIG].get(keys.FINAL, 0)
            fault = (self.faults.get(site) if message.metadata.message_type == "train" else
                     self.final_faults.get(site) if final else None)
            if fault is not None:
                reply = fault(message, reply)
            if reply is not None:
                self.replies.append(reply)
                out.append(reply)
        return out


def serve(tmp_path: Path, grid, **federation):
    from fedecg.app import serve_study

    run_config = {"config": str(study_file(tmp_path, **federation)),
                  "out": str(tmp_path / "run")}
    return serve_study(grid, run_config)


def poisoned(message: Message, reply: Message) -> Message:
    arrays = reply.content[keys.ARRAYS]
    for key in list(arrays):
        values = arrays[key].numpy().astype(np.float32)
        arrays[key] = Array(np.full_like(values, np.nan))
    return reply


def inflated(message: Message, reply: Message) -> Message:
    """Claim a million training examples, to weigh a million times more in the average."""
    reply.content[keys.METRICS][keys.NUM_EXAMPLES] = 1e6
    return reply


def amplified(message: Message, reply: Message) -> Message:
    """Send the global model plus 1000 times the site's own change to it."""
    sent, arrays = message.content[keys.ARRAYS], reply.content[keys.ARRAYS]
    for key in list(arrays):
        start = sent[key].numpy()
        arrays[key] = Array(np.asarray(start + 1000 * (arrays[key].numpy() - start),
                                       dtype=start.dtype))
    return reply


def events(out: Path) -> list[dict]:
    lines = [json.loads(x) for x in RunFolder(out).metrics.read_text().splitlines()]
    return [x for x in lines if x["kind"] in ("dropout", "rejected")]


def test_a_deployed_study_survives_a_poisoned_site_and_writes_its_folder(stores, tmp_path):
    grid = FaultyGrid(stores, {2: poisoned})
    summary = serve(tmp_path, grid)
    out = tmp_path / "run"
    assert read_result(out)["status"] == "ok"
    rejected = [e for e in events(out) if e["kind"] == "rejected"]
    assert {e["stage"] for e in rejected} == {"pretrain", "lab", "diagnosis"}
    assert all(e["site"] == "hospital-2" and e["node_id"] == 102 and "NaN" in e["reason"]
               for e in rejected)
    global_state = load_checkpoint(RunFolder(out).federated_run(0, "transfer").path).global_state
    assert all(torch.isfinite(v).all() for v in global_state.values()
               if v.is_floating_point())
    # each site scored the final model on its own test split; the server combined them
    entry = summary["federated"]["transfer"]
    per_site = summary["sites"]["transfer"]
    assert set(per_site) == {"hospital-0", "hospital-1", "hospital-2"}
    weights = {s: e["n_test"] for s, e in per_site.items()
               if e["diagnosis_macro_auroc"] is not None}
    expected = sum(per_site[s]["diagnosis_macro_auroc"] * w for s, w in weights.items()) / sum(
        weights.values())
    assert entry["diagnosis_macro_auroc"] == pytest.approx(expected)
    assert entry["n_test"] == sum(e["n_test"] for e in per_site.values())
    assert summary["deployment"]["events"] == rejected
    assert summary["naive"]["diagnosis_macro_auroc"] == pytest.approx(0.5)
    folder = RunFolder(out)
    for path in (folder.summary, folder.config, folder.report, folder.metrics):
        assert path.is_file(), path
    report = RunFolder(out).report.read_text()
    assert "Results: federated across hospitals" in report
    assert "on the pooled test split" not in report
    assert report.count("hospital-2") >= 2 and "rejected" in report  # sites table and events
    _, card = load_inference_model(RunFolder(out).model)
    assert card.model_name == "transfer" and card.data_summary["stores"] == list(per_site)


@pytest.mark.parametrize(("fault", "reason"), [
    (inflated, r"num-examples is 1e\+06, more than the \d+ ECGs the site declared"),
    (amplified, r"update norm .* the round's median .*max_update_norm_ratio=10")])
def test_a_site_cannot_dominate_the_average(stores, tmp_path, fault, reason):
    summary = serve(tmp_path, FaultyGrid(stores, {2: fault}))
    rejected = [e for e in summary["deployment"]["events"] if e["kind"] == "rejected"]
    assert {(e["stage"], e["site"], e["node_id"]) for e in rejected} == {
        (stage, "hospital-2", 102) for stage in ("pretrain", "lab", "diagnosis")}
    assert all(re.search(reason, e["reason"]) for e in rejected)
    lines = [json.loads(x) for x in RunFolder(tmp_path / "run").metrics.read_text()
             .splitlines()]
    assert {x["site"] for x in lines if x["kind"] == "train"} == {"hospital-0", "hospital-1"}


def test_a_final_report_claiming_more_test_ecgs_than_declared_is_left_out(stores, tmp_path):
    def lying(message: Message, reply: Message) -> Message:
        reply.content[keys.METRICS]["n_test"] = 1e6
        return reply

    summary = serve(tmp_path, FaultyGrid(stores, final_faults={0: lying}))
    rejected = [e for e in summary["deployment"]["events"] if e["kind"] == "rejected"]
    assert [(e["site"], e["phase"]) for e in rejected] == [("hospital-0", "final evaluation")]
    assert "n_test is 1000000.0" in rejected[0]["reason"]
    assert set(summary["sites"]["transfer"]) == {"hospital-1", "hospital-2"}
    assert summary["federated"]["transfer"]["n_test"] < 1000


def test_too_few_usable_updates_stop_the_run_and_a_resubmission_resumes(stores, tmp_path):
    def crash(message: Message, reply: Message) -> Message:
        return Message(Error(code=2, reason="<class 'RuntimeError'>:<'disk on fire'>"),
                       reply_to=message)

    broken = FaultyGrid(stores, {1: crash, 2: lambda message, reply: None})
    with pytest.raises(FederationError, match="1 usable update"):
        serve(tmp_path, broken)
    out = tmp_path / "run"
    reason = read_result(out)["reason"]
    assert "node 101: RuntimeError: disk on fire" in reason  # not yet named in round 1
    assert "node 102: no reply within the round timeout of 5 s" in reason
    saved = load_checkpoint(RunFolder(out).federated_run(0, "transfer").path)
    assert saved.global_round == 0 and len(saved.history) == 2  # the two dropouts
    serve(tmp_path, FaultyGrid(stores))  # the sites are back: the same study continues
    assert read_result(out)["status"] == "ok"
    dropped = [(e["site"], e["phase"]) for e in events(out)]
    assert ("node 101", "train") in dropped and ("node 102", "train") in dropped


def test_a_silent_site_is_a_dropout_and_the_round_completes(stores, tmp_path):
    grid = FaultyGrid(stores, {0: lambda message, reply: None})
    summary = serve(tmp_path, grid)
    dropouts = [e for e in summary["deployment"]["events"] if e["kind"] == "dropout"]
    assert len(dropouts) == 3 and all("no reply within" in e["reason"] for e in dropouts)
    lines = [json.loads(x) for x in RunFolder(tmp_path / "run").metrics.read_text()
             .splitlines()]
    trained = {x["site"] for x in lines if x["kind"] == "train"}
    assert trained == {"hospital-1", "hospital-2"}


def test_only_parameters_and_scalar_metrics_leave_a_site(stores, tmp_path):
    grid = FaultyGrid(stores)
    serve(tmp_path, grid)
    from fedecg.federated.orchestration import RunPlan, initial_model

    config = json.loads(json.dumps(yaml.safe_load(RunFolder(tmp_path / "run").config
                                                  .read_text())))
    plan = RunPlan.model_validate({"config": config, "model": "transfer", "out": "x",
                                   "manifest": json.loads((stores[0] / "manifest.json")
                                                          .read_text())})
    parameters = {k: tuple(v.shape) for k, v in initial_model(plan).state_dict().items()}
    assert grid.replies
    for reply in grid.replies:
        content = reply.content
        assert set(content.keys()) <= {keys.ARRAYS, keys.METRICS, keys.SITE}
        for key, array in content.array_records.get(keys.ARRAYS, ArrayRecord()).items():
            assert parameters[key] == tuple(array.shape), key  # a model parameter, nothing else
        for name, value in content[keys.METRICS].items():
            assert isinstance(value, int | float), name  # scalars only, no per-record values
        site = content[keys.SITE]
        assert set(site) == {keys.SITE_NAME, keys.SITE_INDEX, keys.SITE_ECGS}
        assert isinstance(site[keys.SITE_ECGS], int)  # a count: the cap on its num-examples


def test_too_few_connected_sites_fail_at_start_with_the_count(stores, tmp_path):
    grid = FaultyGrid(stores[:1])
    with pytest.raises(FederationError, match=r"1 of 3 site\(s\) connected .*min_sites=2"):
        serve(tmp_path, grid)


def test_a_site_that_leaves_between_rounds_is_a_named_dropout(stores, tmp_path):
    class LeavingGrid(FaultyGrid):
        """Site 2 disconnects after the first round (train and evaluate)."""

        exchanges = 0

        def send_and_receive(self, messages, *, timeout=None):
            self.exchanges += 1
            return super().send_and_receive(messages, timeout=timeout)

        def get_node_ids(self):
            nodes = super().get_node_ids()
            return [n for n in nodes if n != 102] if self.exchanges >= 2 else nodes

    summary = serve(tmp_path, LeavingGrid(stores))
    left = [e for e in summary["deployment"]["events"] if e["kind"] == "dropout"]
    assert [(e["site"], e["round"], e["phase"]) for e in left] == [("hospital-2", 2, "train")]
    assert "left the federation" in left[0]["reason"]
    assert set(summary["sites"]["transfer"]) == {"hospital-0", "hospital-1"}
