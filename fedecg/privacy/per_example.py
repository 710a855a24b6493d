"""Per-example gradient clipping without Opacus's hooks (``grad_sample_mode: fast``).

DP-SGD's step needs ``Σ_i clip_C(∇ℓ_i)``: each example's gradient, clipped to norm ``C``,
summed. Opacus's ``hooks`` mode computes it inside ``loss.backward()``: autograd computes the
batch gradient of every parameter (then thrown away), and a hook per layer builds each
example's gradient into a zero-filled buffer before the optimizer clips and sums them. Here
one pass does only what the clipped sum needs:

1. the forward pass records, for each layer with trainable parameters, its input ``a``
   (detached) and its output;
2. ``torch.autograd.grad`` of ``Σ_i ℓ_i`` with respect to those **outputs** gives each layer's
   output gradient ``g`` (rows are examples: ``g_i`` depends on example ``i`` alone, since
   every layer treats rows independently, which ``fedecg.privacy.validation`` checks); no
   parameter gradient is computed;
3. each example's gradient of each parameter is built from ``(a_i, g_i)`` (convolution:
   one batched product per kernel tap, no unfolded copy), giving each example's norm, its
   clip factor ``min(1, C / (‖∇ℓ_i‖ + 1e-6))`` (as Opacus), and the weighted sum. A
   convolution with a short output, called once per step (the deep stages of fedecg's
   encoder), is not built: its per-example norms come from Gram matrices
   (``GhostConv1dGrad``; ghost clipping, chosen per layer by cost as in Bu et al. 2022's
   mixed ghost clipping) and its weighted sum from one weight gradient of the clip-weighted
   ``g``.

Supported layers: ``Conv1d`` (zero padding, no dilation or groups), ``Linear``,
``GroupNorm``, ``LayerNorm``: every layer fedecg's models train. A model with another
trainable layer is refused with its name (``grad_sample_mode: hooks`` handles any layer).
``PerExampleClippedStage.loss`` returns the batch's mean loss carrying the clipped sum as its
gradient (``fedecg.privacy.grouped.with_gradient``), so the training loop's ``backward`` and
``NoisySumOptimizer`` (noise ``N(0, σ²C²)``, division by the expected batch size) finish the
step exactly as Opacus's ``DPOptimizer`` would.
"""

from __future__ import annotations

import operator
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from fedecg.errors import PrivacyError
from fedecg.models.joint import JointModel
from fedecg.privacy.grouped import CLIP_NORM_EPS, with_gradient
from fedecg.privacy.objectives import PerExampleStage
from fedecg.training.stages import Batch, WrappedStage


@dataclass
class PerExampleGrad:
    """One parameter's per-example gradients, as ``pieces`` (each ``[B, ...]``, contiguous)
    that ``assemble`` puts together into the parameter's shape once summed over the batch."""

    pieces: list[torch.Tensor]
    assemble: Callable[[list[torch.Tensor]], torch.Tensor] = operator.itemgetter(0)

    def __add__(self, other: PerExampleGrad) -> PerExampleGrad:
        return PerExampleGrad([a + b for a, b in zip(self.pieces, other.pieces, strict=True)],
                              self.assemble)

    def squared_norms(self) -> torch.Tensor:
        """``[B]``: each example's squared norm of this parameter's gradient."""
        return sum(torch.linalg.vector_norm(piece.flatten(1), dim=1).square()
                   for piece in self.pieces)

    def weighted_sum(self, weights: torch.Tensor) -> torch.Tensor:
        """``Σ_i weights[i] · ∇_i``, in the parameter's shape."""
        return self.assemble([(weights @ piece.flatten(1)).view(piece.shape[1:])
                              for piece in self.pieces])


@dataclass
class GhostConv1dGrad:
    """A ``Conv1d`` weight's per-example gradients, never built (ghost clipping): the squared
    norms from two Gram matrices, ``‖Σ_t g_t u_tᵀ‖² = Σ_{t,t'} (g_t·g_t')(u_t·u_t')`` with
    ``u_t`` the input window under output position ``t``, the weighted sum by one
    convolution weight gradient of the reweighted output gradients."""

    layer: nn.Conv1d
    inputs: torch.Tensor  # [B, C, T]
    output_grad: torch.Tensor  # [B, O, T']

    def squared_norms(self) -> torch.Tensor:
        (pad,), (stride,), (kernel,) = self.layer.padding, self.layer.stride, self.layer.kernel_size
        windows = F.pad(self.inputs, (pad, pad)).unfold(2, kernel, stride)  # [B, C, T', K]
        windows = windows.transpose(1, 2).flatten(2)  # [B, T', C·K]
        gram_in = torch.bmm(windows, windows.transpose(1, 2))  # [B, T', T']
        gram_out = torch.bmm(self.output_grad.transpose(1, 2), self.output_grad)  # [B, T', T']
        return (gram_in * gram_out).sum(dim=(1, 2)).clamp(min=0.0)  # rounding stays >= 0

    def weighted_sum(self, weights: torch.Tensor) -> torch.Tensor:
        return torch.nn.grad.conv1d_weight(
            self.inputs, self.layer.weight.shape, self.output_grad * weights[:, None, None],
            stride=self.layer.stride, padding=self.layer.padding)


def ghost_is_cheaper(layer: nn.Conv1d, output_length: int) -> bool:
    """Whether the Gram matrices (``T'² · (C·K + O)`` products per example) cost less than
    building the gradient (``O · C · K · T'``): in fedecg's encoder, its short deep layers."""
    (kernel,) = layer.kernel_size
    return output_length * (layer.in_channels * kernel + layer.out_channels) < (
        layer.out_channels * layer.in_channels * kernel)


PerExampleGrads = dict[nn.Parameter, PerExampleGrad | GhostConv1dGrad]


def stack_taps(taps: list[torch.Tensor]) -> torch.Tensor:
    """A Conv1d weight ``[O, C, K]`` from its ``K`` taps ``[O, C]``."""
    return torch.stack(taps, dim=-1)


def conv1d_grads(layer: nn.Conv1d, a: torch.Tensor, g: torch.Tensor,
                 ghost: bool = False) -> PerExampleGrads:
    """Per-example gradients of a ``Conv1d``: input ``a`` ``[B, C, T]``, output grad ``g``
    ``[B, O, T']``; the weight's by ghost clipping if ``ghost`` and ``ghost_is_cheaper``, else
    one batched matrix product ``[B, O, C]`` per kernel tap (no unfolded copy of the input,
    none of the taps put together before they are summed over the batch)."""
    (pad,), (stride,), (kernel,) = layer.padding, layer.stride, layer.kernel_size
    grads: PerExampleGrads = {}
    if ghost and ghost_is_cheaper(layer, g.shape[-1]):
        grads[layer.weight] = GhostConv1dGrad(layer, a, g)
    else:
        padded = F.pad(a, (pad, pad))
        span = stride * (g.shape[-1] - 1) + 1
        taps = [padded[:, :, tap:tap + span:stride] for tap in range(kernel)]  # [B, C, T']
        if stride > 1:  # a strided view is not a matrix BLAS reads: copy it
            taps = [tap.contiguous() for tap in taps]
        grads[layer.weight] = PerExampleGrad([torch.bmm(g, tap.transpose(1, 2))
                                              for tap in taps], stack_taps)
    if layer.bias is not None:
        grads[layer.bias] = PerExampleGrad([g.sum(dim=-1)])
    return grads


def linear_grads(layer: nn.Linear, a: torch.Tensor, g: torch.Tensor) -> PerExampleGrads:
    """Per-example gradients of a ``Linear`` on ``[B, ..., in]`` inputs."""
    a, g = (a.unsqueeze(1), g.unsqueeze(1)) if a.dim() == 2 else (a.flatten(1, -2),
                                                                   g.flatten(1, -2))
    grads = {layer.weight: PerExampleGrad([torch.bmm(g.transpose(1, 2), a)])}
    if layer.bias is not None:
        grads[layer.bias] = PerExampleGrad([g.sum(dim=1)])
    return grads


def norm_grads(layer: nn.GroupNorm | nn.LayerNorm, a: torch.Tensor,
               g: torch.Tensor) -> PerExampleGrads:
    """Per-example gradients of the affine part of a ``GroupNorm`` or ``LayerNorm``."""
    if isinstance(layer, nn.GroupNorm):
        normalized = F.group_norm(a, layer.num_groups, eps=layer.eps)
        dims = tuple(range(2, a.dim()))  # [B, C, *]: sum the positions, keep the channels
    else:
        normalized = F.layer_norm(a, layer.normalized_shape, eps=layer.eps)
        dims = tuple(range(1, a.dim() - len(layer.normalized_shape)))
    grads = {}
    if layer.weight is not None:
        grads[layer.weight] = PerExampleGrad([(g * normalized).sum(dim=dims) if dims
                                              else g * normalized])
    if layer.bias is not None:
        grads[layer.bias] = PerExampleGrad([g.sum(dim=dims) if dims else g])
    return grads


GRADS = {nn.Conv1d: conv1d_grads, nn.Linear: linear_grads, nn.GroupNorm: norm_grads,
         nn.LayerNorm: norm_grads}


def unsupported(layer: nn.Module) -> str | None:
    """Why this layer's per-example gradients cannot be built here, or None."""
    if type(layer) not in GRADS:
        return f"{type(layer).__name__} is not one of {sorted(t.__name__ for t in GRADS)}"
    if isinstance(layer, nn.Conv1d) and (
            layer.groups != 1 or layer.dilation != (1,) or isinstance(layer.padding, str)
            or layer.padding_mode != "zeros"):
        return "Conv1d with groups, dilation or non-zero padding"
    return None


def trainable_layers(model: nn.Module, where: str) -> dict[nn.Module, list[nn.Parameter]]:
    """Each layer with parameters that require gradients, and those parameters; raises one
    ``PrivacyError`` naming every layer whose per-example gradients are not supported."""
    layers, problems = {}, []
    for name, layer in model.named_modules():
        params = [p for p in layer.parameters(recurse=False) if p.requires_grad]
        if not params:
            continue
        reason = unsupported(layer)
        if reason is not None:
            problems.append(f"{name} ({reason})")
        layers[layer] = params
    if problems:
        raise PrivacyError(f"{where}: grad_sample_mode 'fast' cannot train "
                           + "; ".join(problems)
                           + "; set privacy.sample.grad_sample_mode to 'hooks'")
    return layers


@dataclass
class Call:
    """One forward call of a trainable layer: its detached input, its output, and the
    output's version then (an in-place change after it would make its gradient another's)."""

    layer: nn.Module
    inputs: torch.Tensor
    output: torch.Tensor
    version: int


@contextmanager
def recording(layers: dict[nn.Module, list[nn.Parameter]]) -> Iterator[list[Call]]:
    """Record every call of ``layers`` that builds a graph, while inside the block."""
    calls: list[Call] = []

    def hook(layer: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        if output.requires_grad:
            calls.append(Call(layer, inputs[0].detach(), output, output._version))

    handles = [layer.register_forward_hook(hook) for layer in layers]
    try:
        yield calls
    finally:
        for handle in handles:
            handle.remove()


def clipped_sum(per_example_loss: torch.Tensor, calls: list[Call],
                params: list[nn.Parameter], max_grad_norm: float) -> list[torch.Tensor]:
    """``Σ_i clip(∇ℓ_i)`` per parameter of ``params`` (module doc, steps 2 and 3)."""
    if not calls or not len(per_example_loss):  # an empty Poisson batch: a sum of nothing
        return [torch.zeros_like(p) for p in params]
    changed = [type(call.layer).__name__ for call in calls if call.output._version != call.version]
    if changed:
        raise PrivacyError(f"the output of {', '.join(changed)} was changed in place after the "
                           "layer ran (e.g. ReLU(inplace=True)), so grad_sample_mode 'fast' "
                           "cannot take its gradient; use layers that are not in place, or "
                           "set privacy.sample.grad_sample_mode to 'hooks'")
    output_grads = torch.autograd.grad(per_example_loss.sum(), [call.output for call in calls])
    per_example: PerExampleGrads = {}
    calls_of = Counter(call.layer for call in calls)
    for call, g in zip(calls, output_grads, strict=True):
        options = {"ghost": calls_of[call.layer] == 1} if isinstance(call.layer, nn.Conv1d) else {}
        for param, grad in GRADS[type(call.layer)](call.layer, call.inputs, g, **options).items():
            if param.requires_grad:  # a layer called twice adds both calls' gradients
                per_example[param] = per_example[param] + grad if param in per_example else grad
    squares = torch.zeros(len(per_example_loss), device=per_example_loss.device)
    for grad in per_example.values():
        squares += grad.squared_norms()
    factor = (max_grad_norm / (squares.sqrt() + CLIP_NORM_EPS)).clamp(max=1.0)  # [B]
    return [per_example[p].weighted_sum(factor) if p in per_example else torch.zeros_like(p)
            for p in params]


@dataclass
class PerExampleClippedStage(WrappedStage):
    """``inner``'s per-example objective whose loss carries ``Σ_i clip(∇ℓ_i)`` as gradient,
    for one model's ``layers`` (``for_model``)."""

    inner: PerExampleStage
    max_grad_norm: float
    layers: dict[nn.Module, list[nn.Parameter]]

    @classmethod
    def for_model(cls, inner: PerExampleStage, model: nn.Module,
                  max_grad_norm: float) -> PerExampleClippedStage:
        """The stage for ``model`` as activated now (its parameters requiring gradients)."""
        return cls(inner, max_grad_norm, trainable_layers(model, f"stage {inner.name!r}"))

    def per_example_loss(self, model: JointModel, batch: Batch) -> torch.Tensor:
        return self.inner.per_example_loss(model, batch)

    def loss(self, model: JointModel, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        """The batch's mean per-example loss (0 when empty), its gradient the clipped sum."""
        params = self.trainable(model)
        with recording(self.layers) as calls:
            losses = self.inner.per_example_loss(model, batch)  # [B]
        summed = clipped_sum(losses, calls, params, self.max_grad_norm)
        value = losses.detach().sum() / max(len(losses), 1)
        return with_gradient(value, params, summed), {"loss": float(value)}
