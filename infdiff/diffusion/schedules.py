"""Noise schedules of discrete DDPMs and their respacing to fewer sampling steps."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Sequence, Union

import torch


def linear_betas(steps: int) -> torch.Tensor:
    """DDPM linear schedule ``β = linspace(1e-4 s, 0.02 s, T)`` with ``s = 1000 / T``.

    Ho et al. 2020 §4 (scaled to ``T`` steps as in Nichol & Dhariwal 2021, improved-diffusion).
    """
    scale = 1000.0 / steps
    if scale * 0.02 >= 1:
        raise ValueError(f"the linear schedule needs steps > 20 (its last beta is 20 / steps), got steps={steps}")
    return torch.linspace(scale * 1e-4, scale * 0.02, steps, dtype=torch.float64)


def cosine_betas(steps: int, offset: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    """Cosine schedule ``ᾱ(t) = f(t) / f(0)``, ``f(t) = cos((t/T + s) / (1 + s) · π/2)^2``.

    Nichol & Dhariwal 2021, eq. 17; ``β_t = min(1 - ᾱ(t) / ᾱ(t - 1), max_beta)``.
    """
    t = torch.arange(steps + 1, dtype=torch.float64) / steps
    f = torch.cos((t + offset) / (1 + offset) * math.pi / 2) ** 2
    return (1 - f[1:] / f[:-1]).clamp(max=max_beta)


def constant_betas(steps: int, beta: float = 0.008) -> torch.Tensor:
    """Constant ``β_t = beta`` (the latent DDPM of DiffAE, Preechakul et al. 2022, uses 0.008)."""
    if not 0 < beta < 1:
        raise ValueError(f"a constant beta must lie in (0, 1), got {beta!r}")
    return torch.full((steps,), float(beta), dtype=torch.float64)


_NAMED_SCHEDULES = {"linear": linear_betas, "cosine": cosine_betas, "constant": constant_betas}
_CONSTANT_PREFIX = "const"


def beta_schedule(name: str, steps: int = 1000) -> torch.Tensor:
    """``β_1 .. β_T`` (float64, shape ``(steps,)``) of a named schedule.

    ``name`` is ``"linear"``, ``"cosine"``, ``"constant"`` (β = 0.008) or ``"const<beta>"``
    such as ``"const0.008"``.
    """
    if steps < 1:
        raise ValueError(f"a schedule needs at least one step, got steps={steps}")
    if name in _NAMED_SCHEDULES:
        return _NAMED_SCHEDULES[name](steps)
    if name.startswith(_CONSTANT_PREFIX):
        try:
            beta = float(name[len(_CONSTANT_PREFIX) :])
        except ValueError:
            beta = None
        if beta is not None:
            return constant_betas(steps, beta)
    raise ValueError(
        f"unknown beta schedule {name!r}; expected one of {sorted(_NAMED_SCHEDULES)} "
        f"or '{_CONSTANT_PREFIX}<beta>' such as 'const0.008'"
    )


@dataclass(frozen=True, eq=False)
class Schedule:
    """The kept timesteps of a DDPM and their cumulative signal levels.

    ``timesteps`` ``(S,)`` are the original timestep ids (ascending) the model is called with;
    ``alphas_cumprod`` ``(S,)`` is ``ᾱ`` at those ids (float64).  Every other coefficient is
    derived from consecutive kept levels, with ``ᾱ_{-1} = 1``, so a respaced schedule is an
    ordinary DDPM over its kept steps (Nichol & Dhariwal 2021, §4).  Positions ``i = 0 .. S-1``
    index the arrays; ``timesteps[i]`` is what the network sees.
    """

    timesteps: torch.Tensor
    alphas_cumprod: torch.Tensor

    def __post_init__(self):
        timesteps = torch.as_tensor(self.timesteps, dtype=torch.long, device="cpu")
        alphas_cumprod = torch.as_tensor(self.alphas_cumprod, dtype=torch.float64, device="cpu")
        if timesteps.dim() != 1 or timesteps.shape != alphas_cumprod.shape or len(timesteps) == 0:
            raise ValueError(
                "timesteps and alphas_cumprod must be non-empty 1-D tensors of equal length, got "
                f"shapes {tuple(timesteps.shape)} and {tuple(alphas_cumprod.shape)}"
            )
        if (timesteps.diff() <= 0).any():
            raise ValueError("timesteps must be strictly increasing")
        if not ((alphas_cumprod > 0).all() and (alphas_cumprod <= 1).all() and (alphas_cumprod.diff() < 0).all()):
            raise ValueError("alphas_cumprod must be strictly decreasing values in (0, 1]")
        object.__setattr__(self, "timesteps", timesteps)
        object.__setattr__(self, "alphas_cumprod", alphas_cumprod)

    @classmethod
    def from_betas(cls, betas: torch.Tensor) -> "Schedule":
        """Schedule over all ``T`` steps: ``ᾱ_t = prod_{s <= t} (1 - β_s)`` (Ho et al. 2020, §2)."""
        betas = torch.as_tensor(betas, dtype=torch.float64)
        if betas.dim() != 1 or not ((betas > 0).all() and (betas < 1).all()):
            raise ValueError("betas must be a 1-D tensor of values in (0, 1)")
        return cls(torch.arange(len(betas)), torch.cumprod(1 - betas, 0))

    @classmethod
    def named(cls, name: str, steps: int = 1000) -> "Schedule":
        """``Schedule.from_betas(beta_schedule(name, steps))``."""
        return cls.from_betas(beta_schedule(name, steps))

    @property
    def num_steps(self) -> int:
        return len(self.timesteps)

    @property
    def alphas_cumprod_prev(self) -> torch.Tensor:
        """``ᾱ_{i-1}``, with ``ᾱ_{-1} = 1``."""
        return torch.cat([self.alphas_cumprod.new_ones(1), self.alphas_cumprod[:-1]])

    @property
    def betas(self) -> torch.Tensor:
        """``β_i = 1 - ᾱ_i / ᾱ_{i-1}`` over the kept steps."""
        return 1 - self.alphas_cumprod / self.alphas_cumprod_prev

    @property
    def posterior_variance(self) -> torch.Tensor:
        """``β̃_i = β_i (1 - ᾱ_{i-1}) / (1 - ᾱ_i)`` (Ho et al. 2020, eq. 7)."""
        return self.betas * (1 - self.alphas_cumprod_prev) / (1 - self.alphas_cumprod)

    @property
    def posterior_mean_coefs(self):
        """``(sqrt(ᾱ_{i-1}) β_i / (1 - ᾱ_i), sqrt(α_i) (1 - ᾱ_{i-1}) / (1 - ᾱ_i))`` (Ho et al. 2020, eq. 7).

        The posterior mean is ``coef_y0 * y_0 + coef_yt * y_t``.
        """
        prev = self.alphas_cumprod_prev
        denom = 1 - self.alphas_cumprod
        coef_y0 = prev.sqrt() * self.betas / denom
        coef_yt = (1 - self.betas).sqrt() * (1 - prev) / denom
        return coef_y0, coef_yt

    def alphas_cumprod_at(self, t: Union[int, torch.Tensor]) -> torch.Tensor:
        """``ᾱ`` at original timestep ids ``t`` (float64, on ``t``'s device, shape of ``t``)."""
        t = torch.as_tensor(t)
        timesteps = self.timesteps.to(t.device)
        pos = torch.searchsorted(timesteps, t).clamp(max=self.num_steps - 1)
        missing = timesteps[pos] != t
        if missing.any():
            raise ValueError(
                f"timestep ids {t[missing].unique().tolist()} are not in this schedule, which keeps "
                f"{self.num_steps} steps between {int(timesteps[0])} and {int(timesteps[-1])}"
            )
        return self.alphas_cumprod.to(t.device)[pos]


RespaceSpec = Union[int, str]
_DDIM_PREFIX = "ddim"


def _evenly_spaced(size: int, count: int) -> List[int]:
    """``count`` positions in ``0 .. size-1`` evenly spaced, including both ends (one if ``count == 1``)."""
    if not 1 <= count <= size:
        raise ValueError(f"cannot keep {count} steps out of {size}; expected 1 <= count <= {size}")
    if count == 1:
        return [0]
    stride = (size - 1) / (count - 1)
    return [round(j * stride) for j in range(count)]


def _sectioned(size: int, counts: Sequence[int]) -> List[int]:
    """Split ``0 .. size-1`` into ``len(counts)`` near-equal sections, each evenly spaced with its count.

    The sectioned spacing of Nichol & Dhariwal 2021, §4 (improved-diffusion's ``space_timesteps``).
    """
    base, extra = divmod(size, len(counts))
    kept, start = [], 0
    for j, count in enumerate(counts):
        section = base + (1 if j < extra else 0)
        kept.extend(start + p for p in _evenly_spaced(section, count))
        start += section
    return kept


def _ddim_strided(size: int, count: int) -> List[int]:
    """``range(0, size, stride)`` for the integer stride that gives exactly ``count`` steps (Song et al. 2021)."""
    for stride in range(1, size + 1):
        if math.ceil(size / stride) == count:
            return list(range(0, size, stride))
    raise ValueError(f"no integer stride gives exactly {count} DDIM steps out of {size}")


def _respace_error(spec) -> ValueError:
    return ValueError(
        f"invalid respacing {spec!r}: expected a positive int (that many evenly spaced steps), "
        f"'{_DDIM_PREFIX}N' (the DDIM stride giving N steps) or comma-separated section counts "
        "such as '10,15,20'"
    )


def _kept_positions(size: int, spec: RespaceSpec) -> List[int]:
    if isinstance(spec, int) and not isinstance(spec, bool):
        return _sectioned(size, [spec])
    if not isinstance(spec, str):
        raise _respace_error(spec)
    if spec.startswith(_DDIM_PREFIX):
        count = spec[len(_DDIM_PREFIX) :]
        if not count.isdigit():
            raise _respace_error(spec)
        return _ddim_strided(size, int(count))
    counts = spec.split(",")
    if not all(c.strip().isdigit() for c in counts):
        raise _respace_error(spec)
    return _sectioned(size, [int(c) for c in counts])


def respace(schedule: Schedule, spec: RespaceSpec) -> Schedule:
    """Keep a subset of the steps of ``schedule``; kept steps keep their ``ᾱ`` and original ids.

    ``spec`` is an int (evenly spaced count), ``"ddimN"`` or section counts ``"10,15,20"``
    (Nichol & Dhariwal 2021, §4).  The betas of the result are ``1 - ᾱ_i / ᾱ_{i-1}`` over the
    kept steps, and the model is still called with the original timestep ids.
    """
    kept = torch.tensor(_kept_positions(schedule.num_steps, spec), dtype=torch.long)
    return Schedule(schedule.timesteps[kept], schedule.alphas_cumprod[kept])
