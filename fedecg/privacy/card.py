"""The privacy section of a model card: mechanism, unit protected, (ε, δ) per site, parameters.

``privacy_card(config, sites)`` describes what a run's DP guarantees from the ε each site
reported (``fedecg.privacy.sweep.site_budgets`` reads them from a study's ``metrics.jsonl``);
``annotate_model`` writes it into an exported model folder's card, saying so when the model's
ECG encoder started from a public model (``train.encoder_from``): that encoder is outside the
guarantee, which covers the sites' records in the stages that ran at the sites.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fedecg.config.privacy import DPConfig
from fedecg.models.io import load_inference_model, save_inference_model

SiteBudgets = dict[str, dict[str, float]]

NOT_COVERED = ("validation/test records and the metrics computed on them; each site's number "
               "of training records; the training losses a site reports")


SAMPLE_MECHANISM = ("DP-SGD at each site (Opacus): per-example gradient clipping, Gaussian noise, "
                    "Poisson sampling, one accountant across all rounds and stages.")
PRETRAIN_OBJECTIVE_WORDS = {
    "align": "each ECG aligns with a frozen embedding of its own clinical row",
    "features": "each ECG regresses its own standardized clinical values"}


def pretraining_words(config: DPConfig) -> str:
    """What pretraining does under sample-level DP, in words."""
    sample = config.sample
    if sample.pretrain_objective == "grouped":
        return ("Pretraining, where the model has it, keeps its contrastive loss within random "
                f"groups of about {sample.contrastive_group} records; each group's gradient is "
                f"clipped to {0.5 * sample.max_grad_norm:g} (half the clipping norm), so one "
                "record moves the noised sum by at most the clipping norm and the same "
                "per-record accountant applies")
    objective = PRETRAIN_OBJECTIVE_WORDS[sample.pretrain_objective]
    return ("Pretraining, where the model has it, uses a per-example objective instead of "
            f"InfoNCE ({objective}), which on the synthetic twin transferred none of InfoNCE's "
            "gain")


def mechanism(config: DPConfig) -> dict[str, str]:
    """The mechanism and the unit it protects, in words, for ``config.mode``."""
    if config.mode == "sample":
        return {"mechanism": f"{SAMPLE_MECHANISM} {pretraining_words(config)}",
                "unit_protected": "one ECG record of a site's training split; a patient with k "
                                  "records is protected as a group, at about k times epsilon"}
    side = config.client.clipping
    return {"mechanism": f"DP-FedAvg (Flower fixed clipping, {side} side): each site's update "
                         "clipped, Gaussian noise on their sum, uniform site weights, "
                         "no amplification by site sampling",
            "unit_protected": "a whole site (all of its records)"}


def privacy_card(config: DPConfig, sites: SiteBudgets) -> dict[str, Any] | None:
    """The card's ``privacy`` entry (None without DP); ``sites`` maps each site to its final
    ``epsilon``, ``delta`` and (sample-level) ``noise_multiplier``."""
    if not config.enabled:
        return None
    clipping = (config.sample.max_grad_norm if config.mode == "sample"
                else config.client.clipping_norm)
    return {**mechanism(config), "accountant": config.accountant,
            "target_epsilon": config.target_epsilon, "clipping_norm": clipping,
            "sites": {name: dict(budget) for name, budget in sites.items()},
            "not_covered": NOT_COVERED}


def public_encoder_words(initialization: dict[str, Any]) -> str:
    """What DP covers when the ECG encoder started from a public model (the card's
    ``initialization``)."""
    stages = ", ".join(initialization.get("stages_trained_after") or []) or "none"
    return (f"the ECG encoder started from the public model {initialization['encoder_from']} "
            f"(sha256 {str(initialization.get('sha256'))[:16]}…), trained without differential "
            "privacy on public data that holds none of the sites' records, so it is outside this "
            "guarantee; DP covers the sites' training records in the stages that trained at the "
            f"sites after it ({stages}), and the epsilon above accounts for exactly those rounds")


def annotate_model(model_dir: Path, privacy: dict[str, Any] | None) -> dict[str, Any] | None:
    """Rewrite the card of the model in ``model_dir`` with ``privacy`` (plus
    ``public_encoder``, ``public_encoder_words``, when its encoder started from a public
    model); return the entry written."""
    model, card = load_inference_model(Path(model_dir))
    if privacy is not None and card.initialization:
        privacy = {**privacy, "public_encoder": public_encoder_words(card.initialization)}
        no_pretraining = "pretrain" not in (card.initialization.get("stages_trained_after") or [])
        if no_pretraining and privacy["mechanism"].startswith(SAMPLE_MECHANISM):
            privacy["mechanism"] = SAMPLE_MECHANISM  # no sentence on a stage that did not run
    save_inference_model(Path(model_dir), model, card.model_copy(update={"privacy": privacy}))
    return privacy
