"""The sections of ``report.html`` for a ``fedecg simulate`` study.

From the study's ``summary.json``, ``metrics.jsonl`` and ``config.yaml``:

* results: every model federated vs pooled vs local-only (diagnosis and lab macro AUROC), with
  bootstrap 95% CIs for one seed, mean ± sd over several seeds and a per-seed table with CIs;
* per site: each model's macro AUROC on every site's test split, federated vs pooled vs the
  site's own local-only model;
* per label: each label's AUROC, a chart of the exported model and a table of every model;
* the round-by-round sections (curves, site events, privacy) from ``fedecg.report.study_rounds``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fedecg.report.html import HtmlPage
from fedecg.report.plots import format_with_ci, plot_grouped_bars
from fedecg.report.study_rounds import curves_section, events_section, privacy_section

Result = Mapping[str, Any]
Lookup = Callable[[Result], Any]

MODELS = ("signal-only", "transfer", "multimodal")
SETTING_COLORS = {"federated": "#d62728", "pooled": "#1f77b4", "local-only": "#7f7f7f"}
DEPLOYED_SCOPE = ("each hospital's own test split scored at the hospital; the study figure is "
                  "their test-example-weighted mean, its 95% CI the normal interval from the "
                  "sites' bootstrap CIs (a deployment has no pooled test split, and trains no "
                  "pooled or local-only baseline)")
TASKS = (("diagnosis_macro_auroc", "Diagnosis"), ("lab_macro_auroc", "Lab-abnormality"))
TABLE_METRICS = (("diagnosis_macro_auroc", "Diagnosis macro AUROC"),
                 ("diagnosis_macro_auprc", "Diagnosis macro AUPRC"),
                 ("lab_macro_auroc", "Lab-abnormality macro AUROC"),
                 ("lab_macro_auprc", "Lab-abnormality macro AUPRC"))
COLOUR_NOTE = "Colours: red federated, blue pooled, grey local-only, in every figure."
EXPORTED = ("from the federated run of the first seed (the sites' models averaged, at each "
            "stage's kept round)")


def study_models(summary: Result) -> list[str]:
    """The study's models, signal-only, transfer, multimodal first."""
    models = [m for m in MODELS if m in summary["federated"]]
    return models + [m for m in summary["federated"] if m not in models]


def settings_run(summary: Result) -> list[str]:
    """The settings a study trained: federated, and the baselines it ran (a deployment:
    federated alone)."""
    if "deployment" in summary:
        return ["federated"]
    return ["federated", *(["pooled"] if summary.get("pooled") else []),
            *(["local-only"] if summary.get("local_only") else [])]


BASELINE_WORDS = {1: "no baselines", 2: "the pooled baseline (no local-only)",
                  3: "pooled and local-only baselines"}
RESULT_COLUMN_SETTINGS = (None, "federated", "pooled", "local-only", "local-only", "pooled")
"""The setting each column of a results table needs (None: always shown)."""
PER_SEED_COLUMN_SETTINGS = (None, "federated", "pooled", "local-only", "federated", "pooled",
                            "local-only")


def study_facts(summary: Result) -> list[tuple[str, object]]:
    """The models, seeds, sites and test split of a study, for the top of its report."""
    models = study_models(summary)
    deployed = "deployment" in summary
    partition = summary.get("partition") or {}
    sites = partition.get("sites") or dig(summary, "deployment", "sites") or {}
    n_test = dig(summary, "federated", models[0], "n_test")
    facts: list[tuple[str, object]] = [
        ("kind", "federated study across hospitals (fedecg server submit)" if deployed
         else "federated study on virtual sites (fedecg simulate), with "
         + BASELINE_WORDS[len(settings_run(summary))]),
        ("models", ", ".join(models)),
        ("seeds", ", ".join(str(s) for s in summary.get("seeds") or [first_seed(summary)]))]
    if partition:
        facts.append(("partition", f"{partition.get('method')} over {len(sites)} sites, "
                      f"label skew {partition.get('label_skew', float('nan')):.3f}"))
    facts += [(f"site {name}", ", ".join(f"{k} {v}" for k, v in entry.items()))
              for name, entry in sites.items() if isinstance(entry, Mapping)]
    facts.append(("test split", f"{n_test if n_test is not None else '—'} ECGs "
                  + ("(the sites' own, combined)" if deployed else "(pooled over the sites)")))
    return facts


def study_results(page: HtmlPage, summary: Result) -> None:
    """The results and per-site sections (from ``summary.json``)."""
    results = seed_results(summary)
    results_section(page, summary, results, study_models(summary))
    per_site_section(page, summary, results, study_models(summary))


def study_rounds(page: HtmlPage, summary: Result, records: list[dict[str, Any]],
                 run_dir: Path) -> None:
    """The curves, site events and privacy sections (from ``metrics.jsonl``, ``config.yaml``)."""
    curves_section(page, records, study_models(summary), first_seed(summary))
    events_section(page, records)
    privacy_section(page, records, run_dir, first_seed(summary))


def seed_results(summary: Result) -> dict[str, Result]:
    """Each seed's results: ``by_seed`` of a several-seed study, else the summary itself."""
    if summary.get("by_seed"):
        return dict(summary["by_seed"])
    return {str(first_seed(summary)): summary}


def first_seed(summary: Result) -> int:
    """The study's first seed (the one its curves and exported model come from)."""
    return int((summary.get("seeds") or [0])[0])


def dig(mapping: Any, *path: str) -> Any:
    """``mapping[p0][p1]...``, or None where a step is missing or not a mapping."""
    for part in path:
        if not isinstance(mapping, Mapping):
            return None
        mapping = mapping.get(part)
    return mapping


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def seed_values(results: Mapping[str, Result], lookup: Lookup, key: str) -> list[float]:
    """``lookup(result)[key]`` of every seed where it is a finite number."""
    values = [dig(lookup(r), key) for r in results.values()]
    return [float(v) for v in values if _finite(v)]


def cell(results: Mapping[str, Result], lookup: Lookup, key: str) -> str:
    """One seed: ``value [CI]``; several: ``mean ± sd`` over the seeds; ``—`` if none."""
    values = seed_values(results, lookup, key)
    if not values:
        return "—"
    if len(results) == 1:
        return format_with_ci(values[0], dig(lookup(next(iter(results.values()))), f"{key}_ci"))
    return mean_sd(values)


def mean_sd(values: list[float], sign: str = "") -> str:
    """``0.564`` for one value, ``0.564 ± 0.009`` (sample sd) for several; ``sign="+"`` signs it."""
    text = f"{np.mean(values):{sign}.3f}"
    return text if len(values) == 1 else f"{text} ± {np.std(values, ddof=1):.3f}"


def gap_cell(results: Mapping[str, Result], model: str, key: str) -> str:
    """Federated minus pooled: per seed, then as for ``mean_sd``; ``—`` if either is missing."""
    gaps = [f - p for f, p in ((dig(r, "federated", model, key), dig(r, "pooled", model, key))
                               for r in results.values()) if _finite(f) and _finite(p)]
    return mean_sd(gaps, "+") if gaps else "—"


def settings(model: str) -> dict[str, Lookup]:
    """Where each setting's pooled-test entry of ``model`` sits in a seed's results."""
    return {"federated": lambda r: dig(r, "federated", model),
            "pooled": lambda r: dig(r, "pooled", model),
            "local-only": lambda r: with_site_means(dig(r, "local_only", model))}


def with_site_means(entry: Any) -> Any:
    """The local-only entry, with each metric it lacks (AUPRC, per-label AUROC) filled in as
    the mean over the site-alone models on the pooled test split."""
    if not isinstance(entry, Mapping):
        return entry
    alone = [e for e in (entry.get("sites") or {}).values() if isinstance(e, Mapping)]
    filled = dict(entry)
    for key in dict.fromkeys(k for e in alone for k in e):
        if key in filled or key.endswith("_ci") or key == "per_store":
            continue
        if all(isinstance(e.get(key), Mapping) for e in alone):
            labels = dict.fromkeys(label for e in alone for label in e[key])
            filled[key] = {label: _mean([e[key].get(label) for e in alone]) for label in labels}
        else:
            filled[key] = _mean([e.get(key) for e in alone])
            own = [dig(e, "per_store", site, key)
                   for site, e in (entry.get("sites") or {}).items() if isinstance(e, Mapping)]
            filled.setdefault(f"{key}_own_site", _mean(own))
    return filled


def _mean(values: Sequence[Any]) -> float | None:
    finite = [float(v) for v in values if _finite(v)]
    return float(np.mean(finite)) if finite else None


def site_settings(model: str, site: str) -> dict[str, Lookup]:
    """Each setting's entry of ``model`` on ``site``'s test split (local-only: the site's own)."""
    return {"federated": lambda r: dig(r, "sites", model, site),
            "pooled": lambda r: dig(r, "pooled", model, "per_store", site),
            "local-only": lambda r: dig(r, "local_only", model, "sites", site, "per_store", site)}


def results_rows(results: Mapping[str, Result], models: Sequence[str],
                 key: str) -> list[list[str]]:
    """Table rows of ``key``: federated, pooled, local-only (mean and own site), the gap.

    With one seed the local-only mean also shows the range of the site-alone models.
    """
    rows = []
    for model in models:
        lookups = settings(model)
        local = cell(results, lookups["local-only"], key)
        spread = local_range(results, model, key)
        if spread is not None:
            local += f" (sites {spread[0]:.3f}–{spread[1]:.3f})"
        rows.append([model, cell(results, lookups["federated"], key),
                     cell(results, lookups["pooled"], key), local,
                     cell(results, lookups["local-only"], f"{key}_own_site"),
                     gap_cell(results, model, key)])
    return rows


def local_range(results: Mapping[str, Result], model: str, key: str) -> list[float] | None:
    """With one seed, the lowest and highest ``key`` of the site-alone models, else None."""
    if len(results) != 1:
        return None
    alone = dig(next(iter(results.values())), "local_only", model, "sites") or {}
    values = [float(v) for v in (dig(e, key) for e in alone.values()) if _finite(v)]
    return [min(values), max(values)] if values else None


def deployed_section(page: HtmlPage, summary: Result, results: Mapping[str, Result],
                     models: Sequence[str]) -> None:
    """A deployed study's results (sites' own test splits) and the sites that took part."""
    page.heading("Results: federated across hospitals")
    naive = summary.get("naive") or {}
    for key, task in TASKS:
        rows = [[model, cell(results, settings(model)["federated"], key)] for model in models]
        rows.append(["naive (training prevalence)",
                     format_with_ci(naive.get(key), naive.get(f"{key}_ci"))])
        page.table(["model", f"{task.lower()} macro AUROC"], rows,
                   caption=f"{task} macro AUROC (seeds {', '.join(results)}): {DEPLOYED_SCOPE}.")
    deployment = summary["deployment"]
    rows = [[site, str(entry.get("train_records")), str(entry.get("test_records"))]
            for site, entry in deployment["sites"].items()]
    page.table(["site", "training records", "test records"], rows,
               caption=f"The sites that reported at the end: {len(rows)} of "
                       f"{deployment['expected_sites']} expected; a round needed "
                       f"{deployment['min_sites']} usable updates.")


def results_section(page: HtmlPage, summary: Result, results: Mapping[str, Result],
                    models: Sequence[str]) -> None:
    """Federated vs pooled vs local-only tables and bars (a deployment: its own section)."""
    if "deployment" in summary:
        deployed_section(page, summary, results, models)
        return
    page.heading("Results: " + " vs ".join(settings_run(summary)))
    seeds = ", ".join(results)
    spread = ("bootstrap 95% CI in brackets" if len(results) == 1
              else f"mean ± sd over {len(results)} seeds, per-seed CIs below")
    n_test = dig(summary, "federated", study_models(summary)[0], "n_test")
    naive = summary.get("naive") or {}
    run = settings_run(summary)
    for key, task in TABLE_METRICS:
        page.heading(task, level=3)
        metric = task.split(" ", 1)[1]
        headers = ["model", f"federated {metric}", f"pooled {metric}",
                   f"local-only {metric} (mean over sites)",
                   f"local-only {metric} (each on its own site)", "federated − pooled"]
        rows = results_rows(results, models, key)
        rows.append(["naive (training prevalence)",
                     *[format_with_ci(naive.get(key), naive.get(f"{key}_ci"))] * 2,
                     "—", "—", "—"])
        keep = columns_run(run, RESULT_COLUMN_SETTINGS)
        local = (" local-only (mean): the site-alone models scored on the pooled test split, "
                 "with their range; own site: each scored on its site's test split."
                 if "local-only" in run else "")
        page.table([headers[i] for i in keep], [[row[i] for i in keep] for row in rows],
                   caption=f"{task} on the pooled test split of {n_test or '—'} ECGs (seeds "
                   f"{seeds}; {spread}).{local} naive scores every ECG with the training "
                   "prevalence.")
    if len(results) > 1:
        per_seed_table(page, results, models, run)
    for key, task in TASKS:
        values, errors = bar_data(results, {m: settings(m) for m in models}, key)
        values = {s: v for s, v in values.items() if s in run}
        page.figure(plot_grouped_bars(values, errors, title=f"{task} macro AUROC, pooled test",
                                      colors=SETTING_COLORS),
                    caption=f"{task} macro AUROC of each model, "
                            + " and ".join(run).replace("local-only", "local-only (mean over "
                                                        "the site-alone models)")
                            + f"; whiskers: {_whisker_words(results)}"
                            + (" (none for local-only: its spread over sites is in the table)"
                               if len(results) == 1 and "local-only" in run else "")
                            + f"; dashed line: chance. {COLOUR_NOTE}")


def columns_run(run: Sequence[str], column_settings: Sequence[str | None]) -> list[int]:
    """Indices of the columns whose setting (None: always shown) the study ``run``."""
    return [i for i, setting in enumerate(column_settings) if setting is None or setting in run]


def per_seed_table(page: HtmlPage, results: Mapping[str, Result], models: Sequence[str],
                   run: Sequence[str]) -> None:
    """Each seed's macro AUROCs with their bootstrap CIs (the settings ``run`` only)."""
    page.heading("Each seed", level=3)
    per_seed = []
    for seed, result in results.items():
        dx, lab = (results_rows({seed: result}, models, key) for key, _ in TASKS)
        per_seed += [[f"{d[0]} · seed {seed}", *d[1:4], *b[1:4]]
                     for d, b in zip(dx, lab, strict=True)]
    headers = ["model · seed", "federated dx AUROC", "pooled dx AUROC",
               "local-only dx AUROC (mean)", "federated lab AUROC", "pooled lab AUROC",
               "local-only lab AUROC (mean)"]
    keep = columns_run(run, PER_SEED_COLUMN_SETTINGS)
    page.table([headers[i] for i in keep], [[row[i] for i in keep] for row in per_seed],
               caption="Each seed: macro AUROC on the pooled test split with its "
                       "bootstrap 95% CI.")


def _whisker_words(results: Mapping[str, Result]) -> str:
    return "bootstrap 95% CI" if len(results) == 1 else "± sd over seeds"


def bar_data(results: Mapping[str, Result], groups: Mapping[str, Mapping[str, Lookup]],
             key: str) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, list[float]]]]:
    """``values[setting][group]`` (mean over seeds) and whiskers (CI, or ± sd over seeds)."""
    values: dict[str, dict[str, float]] = {s: {} for s in SETTING_COLORS}
    errors: dict[str, dict[str, list[float]]] = {s: {} for s in SETTING_COLORS}
    for group, lookups in groups.items():
        for setting, lookup in lookups.items():
            found = seed_values(results, lookup, key)
            if not found:
                continue
            values[setting][group] = float(np.mean(found))
            if len(found) > 1:
                sd = float(np.std(found, ddof=1))
                errors[setting][group] = [values[setting][group] - sd,
                                          values[setting][group] + sd]
            elif len(results) == 1 and setting != "local-only":  # a mean over sites: no CI
                errors[setting][group] = dig(lookup(next(iter(results.values()))),
                                             f"{key}_ci")
    return values, errors


def per_site_section(page: HtmlPage, summary: Result, results: Mapping[str, Result],
                     models: Sequence[str]) -> None:
    """Each model at every site: federated vs pooled vs the site's own local-only model."""
    counts = dig(summary, "partition", "sites") or {}
    sites = list(counts) or list(dict.fromkeys(s for m in models
                                               for s in dig(summary, "sites", m) or {}))
    if not sites:
        return
    page.heading("Per site")
    shown = settings_run(summary)
    headers = ["model @ site (test ECGs)", *(f"{s} {task}" for task in ("dx", "lab")
                                             for s in shown)]
    rows = []
    for model in models:
        for site in sites:
            lookups = site_settings(model, site)
            n_test = dig(counts, site, "test")
            rows.append([f"{model} @ {site}" + (f" ({n_test})" if n_test is not None else ""),
                         *[cell(results, lookups[s], key) for key, _ in TASKS for s in shown]])
    baselines = ("; local-only is the model trained at that site alone" if "local-only" in shown
                 else "")
    page.table(headers, rows, caption=f"Macro AUROC on each site's test split{baselines} "
               f"({_whisker_words(results)}).")
    for key, task in TASKS:
        groups = {f"{model} @ {site}": site_settings(model, site)
                  for model in models for site in sites}
        values, errors = bar_data(results, groups, key)
        values = {s: v for s, v in values.items() if s in shown}
        page.figure(plot_grouped_bars(values, errors, colors=SETTING_COLORS,
                                      title=f"{task} macro AUROC per site"),
                    caption=f"Each model on each site's test split: {', '.join(shown)}; "
                            f"whiskers: {_whisker_words(results)}. {COLOUR_NOTE}")


def per_label_section(page: HtmlPage, summary: Result) -> None:
    """Each label's AUROC: a chart of the exported model, a table of every model."""
    from fedecg.report.run_report import (
        LABEL_TASKS,
        NO_LABEL_CI,
        SINGLE_CLASS,
        SINGLE_CLASS_NOTE,
    )

    results = seed_results(summary)
    models = study_models(summary)
    deployed = "deployment" in summary
    shown = settings_run(summary)
    where = ("the hospitals' own test splits (example-weighted)" if deployed
             else "the pooled test split")
    exported = "transfer" if "transfer" in models else models[0]
    page.heading("Per-label AUROC")
    for key, what in LABEL_TASKS:
        skipped = key.replace("_auroc", "_skipped")
        labels = list(dict.fromkeys(label for r in results.values() for m in models
                                    for part in (key, skipped)
                                    for label in dig(r, "federated", m, part) or {}))
        if not labels:
            continue
        page.heading(f"{what.capitalize()} labels", level=3)
        values, errors = bar_data(results, {label: _label_lookups(exported, key, label)
                                            for label in labels}, "value")
        values = {s: v for s, v in values.items() if s in shown}
        for label in labels:  # a label with a single class everywhere: named, marked n/a
            values["federated"].setdefault(label, float("nan"))
        page.figure(plot_grouped_bars(values, errors, colors=SETTING_COLORS,
                                      title=f"{exported}: {what} AUROC per label",
                                      missing=SINGLE_CLASS_NOTE),
                    caption=f"{exported} (the exported model) on {where}: "
                            f"{', '.join(shown)}"
                            + ("; whiskers: ± sd over seeds. " if len(results) > 1
                               else f". {NO_LABEL_CI} ")
                            + f"{SINGLE_CLASS} {COLOUR_NOTE}")
        columns = [(m, s) for m in models for s in shown]
        rows = [[label, *(cell(results, _label_lookups(m, key, label, ci=False)[s], "value")
                          for m, s in columns)] for label in labels]
        page.table(["label", *(f"{m} {s}" for m, s in columns)], rows,
                   caption=f"{what.capitalize()} AUROC of each label on {where}"
                           + ("" if len(results) == 1 else " (mean ± sd over seeds)")
                           + "; —: a single class in the test split."
                           + ("" if deployed else " Local-only: the mean over the site-alone "
                              "models."))


def _label_lookups(model: str, key: str, label: str, ci: bool = True) -> dict[str, Lookup]:
    """Each setting's ``{"value": AUROC, "value_ci": CI}`` of one label of ``model``."""
    def one(lookup: Lookup) -> Lookup:
        return lambda r: {"value": dig(lookup(r), key, label),
                          "value_ci": dig(lookup(r), f"{key}_ci", label) if ci else None}
    return {setting: one(lookup) for setting, lookup in settings(model).items()}
