"""Virtual-site partitions: patient-disjoint, complete, deterministic, skewed as asked."""

from __future__ import annotations

import json

import numpy as np
import pytest
from builders.site_store import make_store
from typer.testing import CliRunner

from fedecg.config.federated import PartitionConfig
from fedecg.data.store import SiteStore
from fedecg.errors import ConfigError, StoreError
from fedecg.federated.partition import (
    label_skew,
    load_partition,
    partition_store,
    patient_table,
    site_view,
    write_partition,
)


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> SiteStore:
    path = make_store(tmp_path_factory.mktemp("p") / "store", n_patients=120, ecgs_per_patient=2,
                      n_samples=20, hospitals=3)
    return SiteStore.open(path)


def _patients(store: SiteStore, rows) -> set:
    return set(store.cohort["subject_id"].iloc[rows])


@pytest.mark.parametrize("method", ["iid", "dirichlet", "quantity", "natural"])
def test_sites_are_patient_disjoint_and_cover_the_store(store, method):
    config = PartitionConfig(method=method, num_sites=3, alpha=0.5,
                             column="hospital" if method == "natural" else None)
    partition = partition_store(store, config)
    rows = [np.asarray(site.rows) for site in partition.sites]
    assert sorted(np.concatenate(rows).tolist()) == list(range(len(store)))
    seen: set = set()
    for site_rows in rows:
        patients = _patients(store, site_rows)
        assert not patients & seen
        seen |= patients
    for site in partition.sites:
        assert site.n_records == len(site.rows)
        assert sum(site.split_counts.values()) == site.n_records
        assert site.n_patients >= config.min_patients_per_site


def test_iid_sites_have_equal_patient_counts(store):
    partition = partition_store(store, PartitionConfig(method="iid", num_sites=4))
    assert [s.n_patients for s in partition.sites] == [30, 30, 30, 30]


def test_same_seed_same_partition_other_seed_differs(store):
    config = PartitionConfig(method="dirichlet", num_sites=3, alpha=0.5, seed=7)
    first, again = partition_store(store, config), partition_store(store, config)
    other = partition_store(store, config.model_copy(update={"seed": 8}))
    assert [s.rows for s in first.sites] == [s.rows for s in again.sites]
    assert [s.rows for s in first.sites] != [s.rows for s in other.sites]


def test_dirichlet_skew_grows_as_alpha_shrinks(store):
    skew = {alpha: np.mean([partition_store(store, PartitionConfig(
        method="dirichlet", num_sites=3, alpha=alpha, seed=seed)).label_skew for seed in range(3)])
        for alpha in (0.1, 100.0)}
    assert skew[0.1] > skew[100.0] + 0.15


def test_label_skew_by_hand():
    assert label_skew([{"a": 5, "b": 5}, {"a": 5, "b": 5}]) == 0.0
    # overall a: 0.5; site 0 is all a (TV 0.5), site 1 all b (TV 0.5)
    assert label_skew([{"a": 4}, {"b": 4}]) == pytest.approx(0.5)


def test_representative_label_is_the_rarest_positive_diagnosis(store):
    table = patient_table(store, PartitionConfig())
    counts = store.cohort.groupby("subject_id")["dx_ckd"].max()
    ckd_patients = {str(p) for p in counts[counts == 1].index}
    labelled = set(table.loc[table["label"] == "dx_ckd", "patient"])
    assert labelled == ckd_patients  # ckd is the rarest label in the fixture


def test_natural_sites_follow_the_column(store):
    partition = partition_store(store, PartitionConfig(method="natural", num_sites=3,
                                                       column="hospital"))
    for site in partition.sites:
        values = set(store.cohort["hospital"].iloc[site.rows])
        assert values == {site.natural_id}
        assert set(site.label_counts) <= {"dx_atrial_fibrillation", "dx_heart_failure",
                                          "dx_ckd", "none", "unknown"}  # skew still by label


def test_natural_with_wrong_site_count_names_the_values(store):
    with pytest.raises(ConfigError, match="has 3 values"):
        partition_store(store, PartitionConfig(method="natural", num_sites=4, column="hospital"))


def test_too_many_sites_is_a_clear_error(store):
    with pytest.raises(ConfigError, match="120 patients"):
        partition_store(store, PartitionConfig(num_sites=100))


def test_written_partition_round_trips_and_checks_its_store(store, tmp_path):
    partition = partition_store(store, PartitionConfig(method="quantity", num_sites=3))
    path = write_partition(partition, tmp_path)
    assert load_partition(tmp_path, store) == partition
    data = json.loads(path.read_text())
    data["store_n_records"] += 1
    path.write_text(json.dumps(data))
    with pytest.raises(StoreError, match="partition that store again"):
        load_partition(path, store)


def test_cli_partition_writes_manifest(store, tmp_path):
    from fedecg.cli import app

    result = CliRunner().invoke(app, ["partition", str(store.path), "--method", "dirichlet",
                                      "--sites", "3", "--alpha", "0.3", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    partition = load_partition(tmp_path, store)
    assert len(partition.sites) == 3 and partition.config.alpha == 0.3
    assert "site0" in result.output


def test_cli_partition_bad_store_fails_with_one_line(tmp_path):
    from fedecg.cli import app

    result = CliRunner().invoke(app, ["partition", str(tmp_path / "nope"), "--out",
                                      str(tmp_path / "o")])
    assert result.exit_code == 1
    assert "not a site store folder" in result.output


def test_store_matrices_match_the_cohort_and_are_copies(store):
    rows = np.array([5, 0, 17])
    expected = store.cohort[store.manifest.diagnosis_columns].iloc[rows].to_numpy(np.float32)
    first = store.diagnosis_labels(rows)
    np.testing.assert_array_equal(first, expected)
    first[:] = 7.0  # a caller's edit must not reach the next caller
    np.testing.assert_array_equal(store.diagnosis_labels(rows), expected)
    whole = store.clinical()
    whole[:] = 7.0
    assert not (store.clinical() == 7.0).all()
    view = site_view(store, rows)
    np.testing.assert_array_equal(view.diagnosis_labels(), store.diagnosis_labels(np.sort(rows)))


def test_cli_partition_warns_of_a_site_without_test_ecgs_and_refuses_a_file_out(tmp_path):
    from fedecg.cli import app

    small = make_store(tmp_path / "small", n_patients=40, ecgs_per_patient=1, n_samples=20)
    args = ["partition", str(small), "--method", "dirichlet", "--sites", "3", "--alpha", "0.3"]
    result = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "p")])
    assert result.exit_code == 0, result.output
    assert load_partition(tmp_path / "p").sites[0].split_counts["test"] == 0
    assert ("site0: no ECG in the test split, so nothing is tested there; add patients, use "
            "fewer sites" in result.output)
    assert "label(s) have fewer than 5 positive ECGs in the test split" in result.output
    (tmp_path / "file").write_text("x")
    refused = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "file")])
    assert refused.exit_code == 1 and refused.output.count("\n") == 1
    assert "exists and is a file; expected a folder" in refused.output


def test_natural_groups_more_values_than_sites_keeping_each_value_whole(tmp_path):
    """11 hospitals into 8 sites (the twin's carts into 8 or 16 sites): every value at one
    site, patients disjoint, the largest values first to the emptiest site."""
    opened = SiteStore.open(make_store(tmp_path / "store", n_patients=88, ecgs_per_patient=1,
                                       n_samples=20, hospitals=11))
    config = PartitionConfig(method="natural", num_sites=8, column="hospital")
    partition = partition_store(opened, config)
    assert len(partition.sites) == 8
    owner = {}
    for index, site in enumerate(partition.sites):
        values = set(opened.cohort["hospital"].astype(str).iloc[site.rows])
        assert values == set(site.natural_id.split("+"))
        owner.update(dict.fromkeys(values, index))
    assert len(owner) == 11 and sorted(np.concatenate(
        [s.rows for s in partition.sites]).tolist()) == list(range(len(opened)))
    patients = [s.n_patients for s in partition.sites]
    assert max(patients) - min(patients) <= max(opened.cohort["hospital"].value_counts())
    with pytest.raises(ConfigError, match=r"has 11 values .* set num_sites to at most 11"):
        partition_store(opened, config.model_copy(update={"num_sites": 16}))


def test_a_site_opened_alone_reads_only_its_rows_and_copies_no_waveform(store, tmp_path):
    from fedecg.data.store_rows import read_cohort_rows
    from fedecg.federated.partition import open_site_rows
    from fedecg.training.data import CropDataset

    partition = partition_store(store, PartitionConfig(method="iid", num_sites=3))
    write_partition(partition, tmp_path)
    alone = open_site_rows(store.path, tmp_path, 1)
    rows = np.asarray(partition.sites[1].rows)
    view = site_view(store, rows, name="site1")
    assert alone.manifest == view.manifest and alone.manifest.site_name == "site1"
    expected = store.cohort.iloc[rows].reset_index(drop=True)
    for opened in (alone, view):
        assert opened.cohort.equals(expected)
        np.testing.assert_array_equal(opened.waveforms[3], store.waveforms[rows[3]])
    batched = read_cohort_rows(store.path / "cohort.parquet", rows, batch_rows=7)
    assert batched.equals(expected)  # rows kept across many batches
    for opened in (alone, view):
        dataset = CropDataset([(opened, np.array([4, 0]))], crop=None, train=False)
        mapped = dataset.waveforms[0]  # the store's whole map, not a copy of the site's rows
        assert mapped.shape == store.waveforms.shape and not mapped.flags.owndata
        np.testing.assert_array_equal(dataset[0]["ecg"],
                                      store.waveforms[rows[4]].astype(np.float32))
    assert np.shares_memory(CropDataset([(view, np.arange(3))], None, False).waveforms[0],
                            store.waveforms)
    with pytest.raises(StoreError, match=r"rows 0\.\.239"):
        SiteStore.open(store.path, rows=np.array([3, 240]))
