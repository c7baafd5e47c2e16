"""Feature-wise linear modulation (FiLM) by the diffusion time and the latent code.

FiLM (Perez et al., 2018) rescales and shifts every channel by functions of a conditioning vector.
∞-Diff (Bond-Taylor & Willcocks, 2024, arXiv 2303.18242, as in its reference residual blocks)
conditions its sparse and grid blocks on a time embedding ``e_t`` and, in the autoencoding variant,
on a latent ``z``:

    (s_t, b_t) = Linear(GELU(e_t))                  split into two halves of ``C`` channels,
    s_z        = Linear(GELU(Linear(z)))
    FiLM(h)    = (h * (1 + s_t) + b_t) * (1 + s_z),

each per sample and per channel, broadcast over every position of ``h``.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import nn
from torch.nn import functional as F

from infdiff.ops.modulated_norm import modulated_layer_norm


class FiLM(nn.Module):
    """Modulate features by a time embedding and/or a latent code (see the module docstring).

    Args:
        channels: number of feature channels ``C``.
        time_dim: width of the time embedding ``e_t``; ``None`` disables time modulation.
        z_dim: width of the latent ``z``; ``None`` disables latent modulation.
        channels_last: ``True`` for features ``(B, ..., C)`` (e.g. ``(B, N, C)`` point sets or
            ``(B, H, W, C)``), ``False`` for ``(B, C, ...)`` (e.g. ``(B, C, H, W)`` images).  The
            modulation is broadcast over all other dimensions.

    ``forward(h, t_emb, z)`` takes ``t_emb`` of shape ``(B, time_dim)`` and ``z`` of shape
    ``(B, z_dim)``; each must be given exactly when its dimension was configured.
    """

    def __init__(
        self,
        channels: int,
        time_dim: Optional[int] = None,
        z_dim: Optional[int] = None,
        channels_last: bool = True,
    ):
        super().__init__()
        if channels < 1:
            raise ValueError(f"channels must be positive, got {channels}")
        self.channels = channels
        self.channels_last = channels_last
        self.time = None
        self.latent = None
        if time_dim is not None:
            self.time = nn.Sequential(nn.GELU(), nn.Linear(time_dim, 2 * channels))
        if z_dim is not None:
            self.latent = nn.Sequential(nn.Linear(z_dim, channels), nn.GELU(), nn.Linear(channels, channels))

    def _per_channel(self, v: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """Reshape per-sample channel vectors ``(B, C)`` to broadcast against ``h``."""
        singleton = (1,) * (h.dim() - 2)
        if self.channels_last:
            return v.reshape(v.shape[0], *singleton, v.shape[1])
        return v.reshape(v.shape[0], v.shape[1], *singleton)

    @staticmethod
    def _require(name: str, module: Optional[nn.Module], value: Optional[torch.Tensor]) -> None:
        if (module is None) != (value is None):
            state = "without" if module is None else "with"
            raise ValueError(
                f"FiLM was built {state} {name} conditioning but forward got "
                f"{name}={'a tensor' if value is not None else 'None'}"
            )

    def scale_shift(
        self, t_emb: Optional[torch.Tensor] = None, z: Optional[torch.Tensor] = None
    ) -> Optional[Tuple[torch.Tensor, torch.Tensor]]:
        """FiLM as one per-sample affine map ``h ↦ h * scale + shift``, each ``(B, C)``:

            scale = (1 + s_t) (1 + s_z),    shift = b_t (1 + s_z)

        with absent terms left out; ``None`` when there is no conditioning (the identity).
        """
        self._require("t_emb", self.time, t_emb)
        self._require("z", self.latent, z)
        if self.time is None and self.latent is None:
            return None
        scale, shift = None, None
        if self.time is not None:
            s_t, shift = self.time(t_emb).chunk(2, dim=-1)
            scale = 1 + s_t
        if self.latent is not None:
            s_z = 1 + self.latent(z)
            scale = s_z if scale is None else scale * s_z
            shift = None if shift is None else shift * s_z
        if shift is None:
            shift = torch.zeros_like(scale)
        return scale, shift

    def _check_channels(self, h: torch.Tensor) -> None:
        channel_dim = -1 if self.channels_last else 1
        if h.shape[channel_dim] != self.channels:
            raise ValueError(f"FiLM expects {self.channels} channels on dim {channel_dim}, got shape {tuple(h.shape)}")

    def forward(
        self,
        h: torch.Tensor,
        t_emb: Optional[torch.Tensor] = None,
        z: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """Return ``(h * (1 + s_t) + b_t) * (1 + s_z)`` with absent terms left out (one pass over ``h``)."""
        self._check_channels(h)
        affine = self.scale_shift(t_emb, z)
        if affine is None:
            return h
        scale, shift = affine
        return torch.addcmul(self._per_channel(shift, h), h, self._per_channel(scale, h))

    def normalised(self, norm: nn.Module, h: torch.Tensor, t_emb=None, z=None, backend=None) -> torch.Tensor:
        """``FiLM(norm(h))`` for a :class:`~torch.nn.LayerNorm` over the channels or a
        :class:`~torch.nn.GroupNorm`, with the norm's own affine map folded into FiLM's:

            FiLM(γ ĥ + β) = ĥ · (γ scale) + (β scale + shift),

        so the full-size features are normalised once (without affine) and modulated in one
        ``addcmul``, instead of four passes each kept for backward.  A LayerNorm goes through
        :func:`infdiff.ops.modulated_norm.modulated_layer_norm` on ``backend`` (``model.backend``;
        ``None``: PyTorch's operators), which compiled runs as one operator.
        """
        self._check_channels(h)
        affine = self.scale_shift(t_emb, z)
        if affine is None:
            return norm(h)
        layer = isinstance(norm, nn.LayerNorm) and tuple(norm.normalized_shape) == (self.channels,)
        group = isinstance(norm, nn.GroupNorm) and norm.num_channels == self.channels
        if not (layer and self.channels_last or group and not self.channels_last):
            raise ValueError(
                f"FiLM.normalised takes a LayerNorm over the {self.channels} channels (channels last) or a GroupNorm of "
                f"{self.channels} channels (channels first), got {norm} with channels_last={self.channels_last}"
            )
        scale, shift = affine
        if norm.weight is not None:
            shift = torch.addcmul(shift, norm.bias, scale) if norm.bias is not None else shift
            scale = scale * norm.weight
        if layer:
            return modulated_layer_norm(h, scale, shift, norm.eps, backend or "torch")
        unit = F.group_norm(h, norm.num_groups, eps=norm.eps)
        return torch.addcmul(self._per_channel(shift, unit), unit, self._per_channel(scale, unit))
