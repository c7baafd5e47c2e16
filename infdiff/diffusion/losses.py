"""Denoising losses that draw their own times, noise and pixel subsets, and return their parts.

A loss is called as ``loss(model, batch, generator) -> {"loss": (B,), ...}`` (as EDM's losses
are, Karras et al. 2022): it draws ``t`` from its training-time distribution, white noise from
the process's prior and, for ∞-Diff, a random subset of pixels, calls the network once, and
returns per-example parts; ``"loss"`` is what the training loop averages and differentiates.

:class:`DiffusionLoss` is the denoising loss of any process and network ``model(x_t, s, **cond)``;
:class:`AutoencoderLoss` is ∞-Diff's stage 1, whose network also encodes a fresh subset of the
clean image and reports the KL of its code.  Both are registered in :data:`LOSSES`.
"""

from __future__ import annotations

from typing import Callable, Dict, Optional, Union

import torch

from infdiff.diffusion.process import DiffusionProcess
from infdiff.diffusion.targets import ModelFn, Target, get_target
from infdiff.diffusion.timesteps import TIME_DISTRIBUTIONS
from infdiff.ops.grid import Size, as_size
from infdiff.ops.sparse_image import SparseImage, gather_pixels
from infdiff.ops.subsets import SUBSETS, draw_subset
from infdiff.registry import Registry

LOSSES = Registry("loss")
POINTWISE_LOSSES: Dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "mse": lambda out, target: (out - target) ** 2,
    "l1": lambda out, target: (out - target).abs(),
}


def denoising_loss(
    process: DiffusionProcess,
    model_fn: ModelFn,
    x0: torch.Tensor,
    t: torch.Tensor,
    white: torch.Tensor,
    index: Optional[torch.Tensor] = None,
    target: Union[str, Target] = "mollified_epsilon",
    pointwise: str = "mse",
) -> torch.Tensor:
    """Per-example loss ``(B,)``: ``mean_{n, c} ℓ(model_fn(x_t|_S, s), target|_S)`` for given ``t``, ``ξ``, ``S``.

    ∞-Diff (Bond-Taylor & Willcocks 2024) trains on a random subset ``S`` of coordinates: the
    state ``x_t`` and the target are formed on the full grid ``x0`` ``(B, C, H, W)`` (the
    mollifier needs it), then read at flat pixel ids ``index`` ``(B, N)``, and the network sees a
    :class:`~infdiff.ops.SparseImage`.  With ``index=None`` the whole tensor is used as is (a
    dense image or latent vectors ``(B, D)``).  ``white`` is the white noise ``ξ``, ``s`` is
    ``process.model_time(t)``, ``pointwise`` one of :data:`POINTWISE_LOSSES`.
    """
    if pointwise not in POINTWISE_LOSSES:
        raise ValueError(f"unknown pointwise loss {pointwise!r}; expected one of {sorted(POINTWISE_LOSSES)}")
    spec = get_target(target)
    x_t = process.q_sample(x0, t, white)
    wanted = spec.training_target(process, x0, white, t)
    if index is not None:
        if x0.dim() != 4 or index.dim() != 2 or index.shape[0] != x0.shape[0]:
            raise ValueError(
                f"with an index, x0 must be (B, C, H, W) and index (B, N); got x0 {tuple(x0.shape)} "
                f"and index {tuple(index.shape)}"
            )
        x_t, wanted = SparseImage.from_dense(x_t, index), gather_pixels(wanted, index)
    out = model_fn(x_t, process.model_time(t))
    out = out.values if isinstance(out, SparseImage) else out
    if out.shape != wanted.shape:
        raise ValueError(
            f"model output shape {tuple(out.shape)} must equal the {spec.name} target shape {tuple(wanted.shape)}"
        )
    dtype = torch.promote_types(torch.promote_types(out.dtype, wanted.dtype), torch.float32)
    return POINTWISE_LOSSES[pointwise](out.to(dtype), wanted.to(dtype)).flatten(1).mean(1)


def _check_points(points: Optional[int], train_size: Optional[Size], name: str) -> Optional[int]:
    """``points`` checked to be a count of pixels of ``train_size`` (``None``: every pixel)."""
    if points is None:
        return None
    pixels = None if train_size is None else as_size(train_size)[0] * as_size(train_size)[1]
    if isinstance(points, bool) or not isinstance(points, int) or points < 1 or (pixels and points > pixels):
        limit = f"the {pixels} pixels of the {train_size} training grid" if pixels else "the pixels of a grid"
        raise ValueError(f"{name}={points!r}: expected a pixel count from 1 to {limit}")
    return points


def subset_index(
    x0: torch.Tensor, points: Optional[int], subset: str, generator: Optional[torch.Generator] = None
) -> Optional[torch.Tensor]:
    """Flat ids ``(B, points)`` of a fresh random subset of each image, or ``None`` when ``points``
    covers every pixel (the networks then run their dense paths: the same operators)."""
    size = tuple(x0.shape[-2:])
    if points is None or points == size[0] * size[1]:
        return None
    return draw_subset(subset, x0.shape[0], size, points, generator=generator, device=x0.device)


@LOSSES.register("denoising")
class DiffusionLoss:
    """``E_{t ~ p, ξ, S}[ w(t) · mean_S ℓ(f(x_t|_S, t), target|_S) ]`` with its own draws (module docstring).

    Args:
        process: the forward process (and, through it, the noise prior).
        target: what the network predicts (:data:`~infdiff.diffusion.targets.TARGETS`).
        pointwise: ``"mse"`` or ``"l1"``.
        timesteps: training-time distribution (:data:`~infdiff.diffusion.timesteps.TIME_DISTRIBUTIONS`).
        points: pixels per image the loss is taken at (a random ``subset`` each call; ``None``:
            every pixel, also the only choice for vector data).
        subset: the subset design (:data:`~infdiff.ops.subsets.SUBSETS`).
        train_size: the training grid, to check ``points`` against before training starts.
    """

    def __init__(
        self,
        process: DiffusionProcess,
        target: str = "mollified_epsilon",
        pointwise: str = "mse",
        timesteps: str = "uniform",
        points: Optional[int] = None,
        subset: str = "uniform",
        train_size: Optional[Size] = None,
    ):
        if pointwise not in POINTWISE_LOSSES:
            raise ValueError(f"pointwise={pointwise!r}: expected one of {sorted(POINTWISE_LOSSES)}")
        self.process, self.target, self.pointwise = process, get_target(target), pointwise
        self.times = TIME_DISTRIBUTIONS[timesteps](process)
        self.points, self.subset = _check_points(points, train_size, "points"), subset
        SUBSETS[subset]

    def __call__(
        self, model: Callable, batch: torch.Tensor, generator: Optional[torch.Generator] = None, **conditioning
    ) -> Dict[str, torch.Tensor]:
        """Per-example ``loss`` (importance-weighted), ``diffusion`` (unweighted), and whatever the model
        reports: a model may return ``(prediction, {name: (B,) tensor})``."""
        t, weights = self.times.sample(batch.shape[0], generator, batch.device)
        index = subset_index(batch, self.points, self.subset, generator)
        white = self.process.prior.white_noise(batch.shape, generator, batch.device, batch.dtype)
        reported: Dict[str, torch.Tensor] = {}

        def model_fn(x_t, s):
            out = model(x_t, s, **conditioning)
            if isinstance(out, tuple):
                out, extra = out
                reported.update(extra)
            return out

        diffusion = denoising_loss(self.process, model_fn, batch, t, white, index, self.target, self.pointwise)
        self.times.update(t, diffusion.detach())
        return {"loss": weights.to(diffusion.dtype) * diffusion, "diffusion": diffusion, **reported}

    def state_dict(self) -> dict:
        return {"timesteps": self.times.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.times.load_state_dict(state["timesteps"])


@LOSSES.register("autoencoder")
class AutoencoderLoss(DiffusionLoss):
    """Stage 1 of ∞-Diff: ``L = L_diffusion(f(·, t, z)) + λ_KL KL(q(z | x_0) ‖ N(0, I))`` with
    ``z = Enc(x_0 at a fresh subset)`` (Bond-Taylor & Willcocks 2024, §4).

    The network is ``model(x_t, s, encoder_input=...) -> (prediction, {"kl": (B,)})``; the encoder
    sees ``encoder_points`` pixels of the clean image drawn independently of the loss's
    ``points`` (``None``: every pixel, its dense path).  Other arguments are :class:`DiffusionLoss`'s.
    """

    def __init__(
        self,
        process: DiffusionProcess,
        target: str = "mollified_epsilon",
        pointwise: str = "mse",
        timesteps: str = "uniform",
        points: Optional[int] = None,
        subset: str = "uniform",
        train_size: Optional[Size] = None,
        encoder_points: Optional[int] = None,
        kl_weight: float = 0.0,
    ):
        super().__init__(process, target, pointwise, timesteps, points, subset, train_size)
        if not kl_weight >= 0:
            raise ValueError(f"kl_weight={kl_weight!r}: expected a weight >= 0")
        self.encoder_points = _check_points(encoder_points, train_size, "encoder_points")
        self.kl_weight = kl_weight

    def __call__(self, model, batch, generator=None, **conditioning):
        encoder_index = subset_index(batch, self.encoder_points, self.subset, generator)
        view = batch if encoder_index is None else SparseImage.from_dense(batch, encoder_index)
        parts = super().__call__(model, batch, generator, encoder_input=view, **conditioning)
        parts["loss"] = parts["loss"] + self.kl_weight * parts["kl"]
        return parts
