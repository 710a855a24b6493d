"""Assemble the twin's latent world: patients, episodes, ECGs with true labs and morphology,
and the lab draws around them."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from fedecg.data.diagnoses import DEFAULT_DIAGNOSIS_LABELS
from fedecg.data.synth.literature_effects import (
    EFFECTS_VERSION,
    LITERATURE_STREAM,
    apply_literature_effects,
)
from fedecg.data.synth.morphology import compute_morphology
from fedecg.data.synth.physiology import LAB_SPECS, drift_labs, episode_latent_labs, lab_conditions
from fedecg.data.synth.population import (
    ACUTE,
    CHRONIC,
    sample_ecg_times,
    sample_episodes,
    sample_patients,
)
from fedecg.data.synth.sites import SiteProfile

CONDITIONS: tuple[str, ...] = tuple(label.name for label in DEFAULT_DIAGNOSIS_LABELS)
LAB_NAMES: tuple[str, ...] = tuple(LAB_SPECS)
POPULATION_STREAM = 0
HOUR = np.timedelta64(3600, "s")


@dataclass
class World:
    """The latent world: one frame per entity; ``ecgs`` carries truth and morphology per ECG."""

    sites: list[SiteProfile]
    patients: pd.DataFrame
    episodes: pd.DataFrame
    ecgs: pd.DataFrame
    episode_labs: pd.DataFrame


def _unique_ids(rng: np.random.Generator, n: int, low: int, high: int) -> np.ndarray:
    return np.sort(low + rng.choice(high - low, size=n, replace=False))


def _episode_frame(patients: pd.DataFrame, episodes: pd.DataFrame) -> pd.DataFrame:
    pat = patients.iloc[episodes["patient"].to_numpy()].reset_index(drop=True)
    years = (episodes["start"] - pd.to_datetime(pat["anchor_year"].astype(str) + "-01-01"))
    frame = pat[["gender", *CHRONIC]].copy()
    frame["patient"] = episodes["patient"].to_numpy()
    frame["age"] = pat["age0"].to_numpy() + years.dt.days.to_numpy() / 365.25
    for name in ACUTE:
        frame[name] = episodes[name].to_numpy()
    return frame


def _ecg_frame(rng: np.random.Generator, patients: pd.DataFrame, episodes: pd.DataFrame,
               ep_frame: pd.DataFrame, ep_labs: pd.DataFrame,
               times: pd.DataFrame, effects_rng: np.random.Generator | None) -> pd.DataFrame:
    """One row per ECG: ids, patient traits, conditions, latent labs and morphology (with
    the literature's effects drawn from ``effects_rng``, unless None)."""
    ep = times["episode"].to_numpy()
    frame = pd.concat([
        times.reset_index(drop=True),
        patients.drop(columns=list(CHRONIC)).iloc[times["patient"].to_numpy()]
        .reset_index(drop=True),
        ep_frame.drop(columns=["patient", "gender"]).iloc[ep].reset_index(drop=True),
        episodes[["admitted", "hadm_id", "start", "los_days", "mi_territory", "af_today"]]
        .iloc[ep].reset_index(drop=True),
    ], axis=1)
    frame["age"] += (frame["ecg_time"] - frame["start"]).dt.total_seconds() / (365.25 * 86400)
    labs = drift_labs(rng, ep_labs.iloc[ep].reset_index(drop=True), 1.0)
    for name, flags in lab_conditions(labs, frame["gender"]).items():
        frame[name] = flags
    frame = pd.concat([frame, labs], axis=1)
    morphology = compute_morphology(rng, frame)
    if effects_rng is not None:
        morphology = apply_literature_effects(effects_rng, frame, morphology)
    return pd.concat([frame, morphology], axis=1)


def build_world(patients: int, sites: list[SiteProfile], seed: int,
                generator_version: int = EFFECTS_VERSION) -> World:
    """Draw the whole latent world for ``patients`` patients spread over ``sites``.

    From ``generator_version`` 2 the ECGs carry the literature's effects, drawn from their own
    stream: everything else, and all of version 1, stays as version 1 draws it.
    """
    rng = np.random.default_rng([seed, POPULATION_STREAM])
    pats = sample_patients(rng, patients, sites)
    episodes = sample_episodes(rng, pats, sites)
    admitted = episodes["admitted"].to_numpy()
    hadm = np.full(len(episodes), -1, dtype=np.int64)
    hadm[admitted] = rng.permutation(_unique_ids(rng, int(admitted.sum()), 20_000_000, 29_999_999))
    episodes["hadm_id"] = pd.array(np.where(hadm < 0, None, hadm), dtype="Int64")
    ep_frame = _episode_frame(pats, episodes)
    ep_labs = episode_latent_labs(rng, ep_frame, len(pats))
    times = sample_ecg_times(rng, episodes)
    effects_rng = (np.random.default_rng([seed, LITERATURE_STREAM])
                   if generator_version >= EFFECTS_VERSION else None)
    ecgs = _ecg_frame(rng, pats, episodes, ep_frame, ep_labs, times, effects_rng)
    ecgs.insert(0, "study_id", rng.permutation(_unique_ids(rng, len(ecgs), 40_000_000,
                                                           49_999_999)))
    ecgs["cart_id"] = [
        sites[h].cart_ids[i % len(sites[h].cart_ids)]
        for h, i in zip(ecgs["hospital"], rng.integers(0, 1000, len(ecgs)), strict=True)]
    return World(sites, pats, episodes, ecgs, ep_labs)


def _near_draws(rng: np.random.Generator, ecgs: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Draws around ECGs: none (30%), within 1 h (40%), 1-6 h (12%), 6-24 h (18%), either side;
    values drift from the ECG's latent labs with the square root of the time between them."""
    n = len(ecgs)
    kind = rng.choice(4, size=n, p=[0.3, 0.4, 0.12, 0.18])
    hours = np.choose(kind, [np.zeros(n), rng.uniform(0, 1, n), rng.uniform(1, 6, n),
                             rng.uniform(6, 24, n)]) * rng.choice([-1.0, 1.0], size=n)
    keep = kind > 0
    near = ecgs[keep].reset_index(drop=True)
    values = drift_labs(rng, near[list(LAB_NAMES)], np.sqrt(np.abs(hours[keep]) / 24.0))
    draws = near.assign(
        charttime=near["ecg_time"] + (hours[keep] * 3600).astype("timedelta64[s]"),
        morning=False, priority=np.where(np.abs(hours[keep]) < 1, "STAT", "ROUTINE"))
    return draws, values


def _morning_draws(rng: np.random.Generator, world: World) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One routine draw each morning of an admission, from the admission's latent labs."""
    eps = world.episodes[world.episodes["admitted"]]
    days = np.maximum(np.floor(eps["los_days"].to_numpy()).astype(int), 0)
    owner = np.repeat(eps.index.to_numpy(), days)
    day = np.concatenate([np.arange(1, d + 1) for d in days]) if len(owner) else np.zeros(0)
    rows = world.episodes.loc[owner].reset_index(drop=True)
    draws = pd.concat([
        rows[["hadm_id", "start", "patient", *[c for c in CONDITIONS if c in rows.columns]]],
        world.patients.iloc[rows["patient"].to_numpy()][
            ["subject_id", "gender", *CHRONIC]].reset_index(drop=True)], axis=1)
    draws["charttime"] = (draws["start"].dt.normalize() + (day * 24 + 5) * HOUR
                          + (rng.integers(0, 120, len(owner)) * 60).astype("timedelta64[s]"))
    values = drift_labs(rng, world.episode_labs.loc[owner].reset_index(drop=True), 1.0)
    return draws.assign(morning=True, priority="ROUTINE"), values


def lab_draws(rng: np.random.Generator, world: World) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Lab draws (ids, times, conditions) and their true values: around ECGs and each morning."""
    near, near_values = _near_draws(rng, world.ecgs)
    morning, morning_values = _morning_draws(rng, world)
    columns = ["subject_id", "hadm_id", "gender", "charttime", "morning", "priority", *CONDITIONS]
    draws = pd.concat([near.reindex(columns=columns), morning.reindex(columns=columns)],
                      ignore_index=True)
    draws[list(CONDITIONS)] = draws[list(CONDITIONS)].fillna(False).astype(bool)
    values = pd.concat([near_values, morning_values], ignore_index=True)
    _attach_admission(draws, world.episodes)
    draws["specimen_id"] = rng.permutation(_unique_ids(rng, len(draws), 1_000_000, 99_999_999))
    draws["storetime"] = draws["charttime"] + (rng.integers(20, 150, len(draws)) * 60).astype(
        "timedelta64[s]")
    return draws, values


def _attach_admission(draws: pd.DataFrame, episodes: pd.DataFrame) -> None:
    """A draw carries its ``hadm_id`` only when it falls inside that admission (in place)."""
    adm = episodes[episodes["admitted"]].set_index("hadm_id")
    hadm = draws["hadm_id"]
    known = hadm.notna().to_numpy()
    start = adm["start"].reindex(hadm[known].astype("int64")).to_numpy()
    end = start + (adm["los_days"].reindex(hadm[known].astype("int64")).to_numpy()
                   * 86400).astype("timedelta64[s]")
    inside = np.zeros(len(draws), dtype=bool)
    t = draws.loc[known, "charttime"].to_numpy()
    inside[known] = (t >= start) & (t <= end)
    draws["hadm_id"] = draws["hadm_id"].where(inside)
