"""Check at start that a model can be trained with DP-SGD, naming every offending layer.

Opacus's ``ModuleValidator`` checks only trainable layers and does not say where a problem
is. Here every submodule is checked (a frozen BatchNorm in training mode still mixes the
examples of a batch), and all problems are collected into one ``PrivacyError`` whose message
names each layer by its path in the model.
"""

from __future__ import annotations

from opacus.validators import ModuleValidator
from torch import nn

from fedecg.errors import PrivacyError


def model_problems(model: nn.Module) -> list[str]:
    """``path (Type): reason`` for each submodule Opacus's validators reject."""
    problems = []
    for name, module in model.named_modules():
        validator = ModuleValidator.VALIDATORS.get(type(module))
        if validator is None:
            continue
        for error in validator(module):
            reason = str(error).split(". ")[0]
            problems.append(f"{name or '<root>'} ({type(module).__name__}): {reason}")
    return problems


def validate_model(model: nn.Module, where: str = "model") -> None:
    """Raise one ``PrivacyError`` naming every layer of ``model`` that DP-SGD cannot handle."""
    problems = model_problems(model)
    if problems:
        raise PrivacyError(
            f"{where}: {len(problems)} layer(s) cannot be trained with differential privacy: "
            + "; ".join(problems) + ". Use layers whose output for one example does not "
            "depend on the rest of its batch (e.g. encoder.norm: group, layer or instance "
            "instead of BatchNorm), or set privacy.mode none")
