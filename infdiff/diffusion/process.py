"""Forward processes in continuous time: ``x_t = α(t) A x_0 + σ(t) η`` with ``η`` drawn from a prior.

A :class:`DiffusionProcess` has a noise prior ``N(0, C)`` (:mod:`infdiff.diffusion.priors`), signal
and noise levels ``α(t)``, ``σ(t)`` on ``t ∈ [0, 1]`` (``α(0) = 1``, ``σ(0) = 0``) and, for ∞-Diff's
*mollified states*, the data operator ``A = C^{1/2}`` (Bond-Taylor & Willcocks 2024, §3:
``x_t = T(√ᾱ_t x_0 + √(1-ᾱ_t) ξ)`` with ``T = C^{1/2}`` the mollifier); otherwise ``A = I``.
Losses, targets and samplers are written against this protocol only.  Processes with an SDE
(``dx = f(x, t) dt + g(t) dW_C``) also give :meth:`~DiffusionProcess.drift` and
:meth:`~DiffusionProcess.diffusion`.

:class:`DiscreteDDPM` is the discrete DDPM of Ho et al. (2020) as one implementation: its
``T`` steps sit at ``t_k = (k + 1) / T`` (:mod:`infdiff.diffusion.timesteps`), its network is
conditioned on the step id ``k``, and sampling respaces its schedule.  Processes are registered
in :data:`PROCESSES` by the names a config's ``process.name`` uses.
"""

from __future__ import annotations

import abc
import dataclasses
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple

import torch

from infdiff.diffusion.priors import NoisePrior, WhiteNoise
from infdiff.diffusion.schedules import RespaceSpec, Schedule, respace
from infdiff.diffusion.timesteps import step_times, time_steps
from infdiff.registry import Registry

PROCESSES = Registry("process")
ON_GRID = 1e-3  # |t T - k| below this reads time t as step k exactly


def expand_like(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Per-example ``values`` ``(B,)`` (or a scalar) as ``(B, 1, ..., 1)`` in ``like``'s dtype and device."""
    values = values.to(device=like.device, dtype=like.dtype)
    if values.dim() == 0:
        return values
    return values.reshape(-1, *([1] * (like.dim() - 1)))


class DiffusionProcess(abc.ABC):
    """``q(x_t | x_0) = N(α(t) A x_0, σ(t)² C)`` on ``t ∈ [0, 1]`` (module docstring).

    Implementations are frozen dataclasses with the fields ``prior`` and ``mollified_states``
    and define :meth:`alpha` and :meth:`sigma`.  ``num_steps`` is the number of training steps
    of a discrete process (``None`` in continuous time, where training draws ``t`` from
    ``[t_min, 1]``).
    """

    prior: NoisePrior
    mollified_states: bool
    num_steps: Optional[int] = None
    t_min: float = 1e-3

    @abc.abstractmethod
    def alpha(self, t: torch.Tensor) -> torch.Tensor:
        """Signal level ``α(t)`` (float64, shape and device of ``t``)."""

    @abc.abstractmethod
    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        """Noise level ``σ(t)`` (float64, shape and device of ``t``)."""

    def drift(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """``f(x, t)`` of the forward SDE, where the process has one."""
        raise NotImplementedError(f"{type(self).__name__} is not defined by an SDE")

    def diffusion(self, t: torch.Tensor) -> torch.Tensor:
        """``g(t)`` of the forward SDE ``dx = f dt + g dW_C``, where the process has one."""
        raise NotImplementedError(f"{type(self).__name__} is not defined by an SDE")

    def model_time(self, t: torch.Tensor) -> torch.Tensor:
        """What the network is conditioned on at time ``t``: ``1000 t`` (the scale the sinusoidal
        time embedding suits, :mod:`infdiff.nn.embeddings`)."""
        return 1000.0 * t

    def levels(self, t: float) -> Tuple[float, float]:
        """``(α(t), σ(t))`` as Python floats, for samplers stepping a whole batch at one time."""
        t = torch.tensor(float(t), dtype=torch.float64)
        return float(self.alpha(t)), float(self.sigma(t))

    def coefficients(self, t: torch.Tensor, like: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """``α(t)``, ``σ(t)`` per example, broadcastable against ``like`` and in its dtype."""
        return expand_like(self.alpha(t), like), expand_like(self.sigma(t), like)

    def clean_state(self, x0: torch.Tensor) -> torch.Tensor:
        """The state at ``t = 0``: ``y_0 = A x_0`` (``C^{1/2} x_0`` for mollified states)."""
        return self.prior.apply_sqrt_cov(x0) if self.mollified_states else x0

    def data_estimate(self, y0: torch.Tensor, inv_snr: Optional[float] = None) -> torch.Tensor:
        """``x_0`` from a clean state ``y_0 = A x_0`` (the prior's regularised inverse for mollified
        states, ∞-Diff's Wiener filter; ``inv_snr`` replaces the prior's regulariser), for display and scoring."""
        return self.prior.apply_inverse_sqrt_cov(y0, inv_snr) if self.mollified_states else y0

    def q_sample(
        self,
        x0: torch.Tensor,
        t: torch.Tensor,
        white: Optional[torch.Tensor] = None,
        generator: Optional[torch.Generator] = None,
    ) -> torch.Tensor:
        """``x_t = α(t) A x_0 + σ(t) C^{1/2} ξ`` for white noise ``ξ`` (drawn from the prior if omitted).

        ``x0`` is ``(B, C, H, W)`` (or ``(B, D)`` for vector data) and ``t`` ``(B,)``.  With mollified
        states ``A = C^{1/2}``, applied once to ``α x_0 + σ ξ`` (∞-Diff §3).
        """
        if white is None:
            white = self.prior.white_noise(x0.shape, generator, x0.device, x0.dtype)
        elif white.shape != x0.shape:
            raise ValueError(f"noise shape {tuple(white.shape)} must equal x0 shape {tuple(x0.shape)}")
        alpha, sigma = self.coefficients(t, x0)
        if self.mollified_states:
            return self.prior.apply_sqrt_cov(alpha * x0 + sigma * white)
        return alpha * x0 + sigma * self.prior.apply_sqrt_cov(white)

    def terminal_state(
        self,
        shape: Sequence[int],
        generator: Optional[torch.Generator] = None,
        device=None,
        dtype: Optional[torch.dtype] = None,
    ) -> torch.Tensor:
        """A draw of ``x_1`` for data of unit scale: ``sqrt(α(1)² + σ(1)²) η`` (``η`` itself for a VP process)."""
        alpha, sigma = self.levels(1.0)
        return (alpha * alpha + sigma * sigma) ** 0.5 * self.prior.sample(shape, generator, device, dtype)

    def sampling_times(self, steps: RespaceSpec) -> List[float]:
        """Descending times a sampler visits (then it ends at ``t = 0``): ``steps`` evenly spaced."""
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f"{type(self).__name__} samples with a positive int number of steps, got {steps!r}")
        return [(i + 1) / steps for i in reversed(range(steps))]

    def with_prior(self, prior: NoisePrior) -> "DiffusionProcess":
        """This process with another prior (e.g. one drawing its noise on a finer grid)."""
        return dataclasses.replace(self, prior=prior)


@dataclass(frozen=True, eq=False)
class DiscreteDDPM(DiffusionProcess):
    """DDPM with ``ᾱ`` from ``schedule``: ``α = sqrt(ᾱ)``, ``σ = sqrt(1 - ᾱ)`` (Ho et al. 2020, eq. 4).

    ``schedule`` holds the steps ``k`` at ``t_k = (k + 1) / T``; between them ``log ᾱ`` is linear in
    ``t`` (with ``ᾱ(0) = 1``), so the process is defined at every time although it is trained and
    sampled on its steps.  ``mollified_states`` gives ∞-Diff's process (module docstring); with the
    white prior and without it, a plain DDPM (e.g. over latent vectors).
    """

    schedule: Schedule
    prior: NoisePrior = field(default_factory=WhiteNoise)
    mollified_states: bool = False

    @classmethod
    def named(
        cls,
        schedule: str = "cosine",
        steps: int = 1000,
        prior: Optional[NoisePrior] = None,
        mollified_states: bool = False,
    ) -> "DiscreteDDPM":
        """The process of a named beta schedule (:func:`~infdiff.diffusion.schedules.beta_schedule`)."""
        try:
            table = Schedule.named(schedule, steps)
        except ValueError as error:  # said as the argument it came from, so a config error names its key
            raise ValueError(f"schedule={schedule!r}: {error}") from None
        return cls(table, prior or WhiteNoise(), mollified_states)

    @property
    def num_steps(self) -> int:
        return self.schedule.num_steps

    def alpha_bar(self, t: torch.Tensor) -> torch.Tensor:
        """``ᾱ(t)`` (float64): exact on the steps, log-linear between them."""
        t = torch.as_tensor(t)
        table = torch.cat([torch.ones(1, dtype=torch.float64), self.schedule.alphas_cumprod]).to(t.device)
        log_table = table.log()
        position = t.to(torch.float64).clamp(0, 1) * self.num_steps
        nearest = position.round()
        below = position.floor().long().clamp(max=self.num_steps - 1)
        between = (log_table[below] + (position - below) * (log_table[below + 1] - log_table[below])).exp()
        return torch.where((position - nearest).abs() < ON_GRID, table[nearest.long()], between)

    def alpha(self, t):
        return self.alpha_bar(t).sqrt()

    def sigma(self, t):
        return (1 - self.alpha_bar(t)).sqrt()

    def model_time(self, t: torch.Tensor) -> torch.Tensor:
        """The step id ``k`` of time ``t_k`` (long): the network is conditioned on steps as in DDPM."""
        return time_steps(t, self.num_steps)

    def sampling_times(self, steps: RespaceSpec) -> List[float]:
        """The kept steps of ``respace(schedule, steps)``, descending (Nichol & Dhariwal 2021, §4)."""
        kept = respace(self.schedule, steps).timesteps
        return step_times(kept, self.num_steps, torch.float64).flip(0).tolist()


PROCESSES.register("ddpm", DiscreteDDPM.named)
