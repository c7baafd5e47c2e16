"""A layer norm over the channels with a per-sample scale and shift, as one compiled operator.

∞-Diff's sparse blocks apply FiLM after a LayerNorm (:mod:`infdiff.nn.film`); with the norm's own
affine map folded into FiLM's, the pair is

    y[b, r, c] = (x[b, r, c] - μ[b, r]) · σ⁻¹[b, r] · scale[b, c] + shift[b, c],
    μ, σ² = the mean and (biased) variance over the channels, σ⁻¹ = 1 / √(σ² + ε).

``infdiff::modulated_layer_norm`` computes ``y`` in one pass over ``x`` and keeps only the row
statistics ``(B·R,)`` for backward besides ``x`` itself (which the residual stream holds anyway);
its backward recomputes ``x̂ = (x - μ) σ⁻¹`` and returns the three gradients in two passes
(``csrc/norm_ops.h`` has the formulas).  Composed from PyTorch operators the same map is a
normalisation and an ``addcmul``, which keep ``x̂`` too; that is what ``backend="torch"`` runs.
The compiled backends are those of the sparse kernels (:mod:`infdiff.ops.backends`), held to the
reference in :mod:`infdiff.ops.reference_kernels` (the operator with ``backend="torch"``); eager calls
run them under the same autograd formula in C++ (:func:`~infdiff.ops.backends.differentiable`).
"""

from __future__ import annotations

from typing import List

import torch
from torch.nn import functional as F

from infdiff.ops.backends import AUTO, differentiable, kernels, resolve_backend
from infdiff.ops.reference_kernels import accumulation_dtype


@torch.library.custom_op("infdiff::modulated_layer_norm", mutates_args=())
def modulated_layer_norm_op(
    x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor, eps: float, backend: str
) -> List[torch.Tensor]:
    """``[y (B, R, C), mean (B·R,), rstd (B·R,)]`` for ``x (B, R, C)``, ``scale`` and ``shift`` ``(B, C)``."""
    return list(kernels(backend).modulated_layer_norm(x, scale, shift, eps))


@modulated_layer_norm_op.register_fake
def _(x, scale, shift, eps, backend):
    rows = x.shape[0] * x.shape[1]
    stats = x.new_empty((rows,), dtype=accumulation_dtype(x.dtype))
    return [torch.empty_like(x, memory_format=torch.contiguous_format), stats, torch.empty_like(stats)]


@torch.library.custom_op("infdiff::modulated_layer_norm_backward", mutates_args=())
def modulated_layer_norm_backward_op(
    grad: torch.Tensor, x: torch.Tensor, scale: torch.Tensor, mean: torch.Tensor, rstd: torch.Tensor, backend: str
) -> List[torch.Tensor]:
    """``[grad_x (B, R, C), grad_scale (B, C), grad_shift (B, C)]``."""
    return list(kernels(backend).modulated_layer_norm_backward(grad, x, scale, mean, rstd))


@modulated_layer_norm_backward_op.register_fake
def _(grad, x, scale, mean, rstd, backend):
    return [
        torch.empty_like(x, memory_format=torch.contiguous_format),
        torch.empty_like(scale),
        torch.empty_like(scale),
    ]


def _setup_context(ctx, inputs, output):
    x, scale, _, _, backend = inputs
    _, mean, rstd = output
    ctx.save_for_backward(x, scale, mean, rstd)
    ctx.backend = backend
    ctx.mark_non_differentiable(mean, rstd)
    ctx.set_materialize_grads(False)  # no zero-filled gradients for the statistics: two launches per call saved


def _backward(ctx, grads):
    grad = grads[0]  # the row statistics are not differentiable
    if grad is None:
        return None, None, None, None, None
    x, scale, mean, rstd = ctx.saved_tensors
    grad_x, grad_scale, grad_shift = modulated_layer_norm_backward_op(
        grad.contiguous(), x, scale, mean, rstd, ctx.backend
    )
    return grad_x, grad_scale, grad_shift, None, None


modulated_layer_norm_op.register_autograd(_backward, setup_context=_setup_context)


def modulated_layer_norm(
    x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor, eps: float = 1e-5, backend: str = AUTO
) -> torch.Tensor:
    """``(x - μ) σ⁻¹ · scale + shift`` over the last dimension of ``x (B, ..., C)``, with ``scale`` and
    ``shift`` ``(B, C)`` (or ``(1, C)``) broadcast over every other position of their sample."""
    if x.dim() < 2:
        raise ValueError(f"modulated_layer_norm takes x of shape (B, ..., C), got {tuple(x.shape)}")
    batch, channels = x.shape[0], x.shape[-1]
    for name, value in (("scale", scale), ("shift", shift)):
        if value.dim() != 2 or value.shape[1] != channels or value.shape[0] not in (1, batch):
            raise ValueError(f"modulated_layer_norm: {name} must be ({batch}, {channels}), got {tuple(value.shape)}")
    resolved = resolve_backend(backend, x.device.type)
    if resolved == "torch":
        # PyTorch's own layer norm and addcmul under its autograd: the fastest composition of its
        # operators (the reference kernels' hand-written backward exists to check the compiled ones)
        per_sample = (batch,) + (1,) * (x.dim() - 2) + (channels,)
        unit = F.layer_norm(x, (channels,), eps=eps)
        return torch.addcmul(shift.reshape(-1, *per_sample[1:]), unit, scale.reshape(-1, *per_sample[1:]))
    rows = x.reshape(batch, -1, channels).contiguous()
    scale = scale.to(x.dtype).expand(batch, channels).contiguous()
    shift = shift.to(x.dtype).expand(batch, channels).contiguous()
    y, _, _ = differentiable("modulated_layer_norm", resolved)(rows, scale, shift, float(eps))
    return y.reshape(x.shape)
