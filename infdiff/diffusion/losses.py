"""Denoising losses on random pixel subsets (∞-Diff) or on whole vectors (latent DDPM)."""

from __future__ import annotations

from typing import Optional, Union

import torch

from infdiff.diffusion.parameterization import ModelFn, Target, get_target
from infdiff.diffusion.process import MollifiedDiffusion
from infdiff.ops.sparse_image import gather_pixels

_POINTWISE_LOSSES = {
    "mse": lambda out, target: (out - target) ** 2,
    "l1": lambda out, target: (out - target).abs(),
}


def subset_diffusion_loss(
    process: MollifiedDiffusion,
    model_fn: ModelFn,
    x0: torch.Tensor,
    t: torch.Tensor,
    index: Optional[torch.Tensor] = None,
    target: Union[str, Target] = "mollified_epsilon",
    noise: Optional[torch.Tensor] = None,
    loss: str = "mse",
) -> torch.Tensor:
    """Per-example loss ``(B,)``: ``mean_{n, c} ℓ(model_fn(x_t[index], t), target[index])``.

    ∞-Diff (Bond-Taylor & Willcocks 2024) trains on a random subset of coordinates: the
    mollified state ``x_t`` and the target are formed on the full grid ``x0`` ``(B, C, H, W)``
    (the mollifier needs it), then gathered at flat pixel ids ``index`` ``(B, N)``, and the
    network sees ``(B, N, C)`` values.  With ``index=None`` the whole tensor is used as is,
    e.g. latents ``(B, D)`` with the identity mollifier (the latent DDPM of DiffAE).
    ``noise`` is the white noise ``ξ``; ``loss`` is ``"mse"`` or ``"l1"``; ``target`` names a
    parameterisation from :data:`infdiff.diffusion.parameterization.TARGETS`.
    """
    if loss not in _POINTWISE_LOSSES:
        raise ValueError(f"unknown loss {loss!r}; expected one of {sorted(_POINTWISE_LOSSES)}")
    spec = get_target(target)
    if noise is None:
        noise = process.white_noise(x0.shape, device=x0.device, dtype=x0.dtype)
    x_t = process.q_sample(x0, t, noise)
    wanted = spec.training_target(process, x0, noise, t)
    if index is not None:
        if x0.dim() != 4 or index.dim() != 2 or index.shape[0] != x0.shape[0]:
            raise ValueError(
                f"with an index, x0 must be (B, C, H, W) and index (B, N); got x0 {tuple(x0.shape)} "
                f"and index {tuple(index.shape)}"
            )
        x_t, wanted = gather_pixels(x_t, index), gather_pixels(wanted, index)
    out = model_fn(x_t, t)
    if out.shape != wanted.shape:
        raise ValueError(
            f"model output shape {tuple(out.shape)} must equal the {spec.name} target shape {tuple(wanted.shape)}"
        )
    dtype = torch.promote_types(torch.promote_types(out.dtype, wanted.dtype), torch.float32)
    return _POINTWISE_LOSSES[loss](out.to(dtype), wanted.to(dtype)).flatten(1).mean(1)
