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

from typing import Dict, List, Optional, Sequence, Tuple

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
        :class:`~torch.nn.GroupNorm`, with the norm's own affine map folded into FiLM's
        (:meth:`folded_affine`), so the full-size features are normalised once (without affine) and
        modulated in one ``addcmul``, instead of four passes each kept for backward.  A LayerNorm goes
        through :func:`infdiff.ops.modulated_norm.modulated_layer_norm` on ``backend``
        (``model.backend``; ``None``: PyTorch's operators), which compiled runs as one operator.
        """
        return self.apply_folded(norm, h, self.folded_affine(norm, t_emb, z), backend)

    def _check_norm(self, norm: nn.Module) -> bool:
        """Whether ``norm`` is a LayerNorm (else a GroupNorm) that :meth:`normalised` can fold."""
        layer = isinstance(norm, nn.LayerNorm) and tuple(norm.normalized_shape) == (self.channels,)
        group = isinstance(norm, nn.GroupNorm) and norm.num_channels == self.channels
        if not (layer and self.channels_last or group and not self.channels_last):
            raise ValueError(
                f"FiLM.normalised takes a LayerNorm over the {self.channels} channels (channels last) or a GroupNorm of "
                f"{self.channels} channels (channels first), got {norm} with channels_last={self.channels_last}"
            )
        return layer

    def folded_affine(self, norm: nn.Module, t_emb=None, z=None) -> Optional[Tuple[torch.Tensor, torch.Tensor]]:
        """FiLM after ``norm``'s affine map as one per-sample ``(scale, shift)``, each ``(B, C)``:

            FiLM(γ ĥ + β) = ĥ · (γ scale) + (β scale + shift);

        ``None`` when there is no conditioning (``norm`` then applies as it is)."""
        affine = self.scale_shift(t_emb, z)
        if affine is None:
            return None
        self._check_norm(norm)
        return _fold_norm_affine(*affine, norm.weight, norm.bias)

    def apply_folded(
        self, norm: nn.Module, h: torch.Tensor, affine: Optional[Tuple[torch.Tensor, torch.Tensor]], backend=None
    ) -> torch.Tensor:
        """``ĥ · scale + shift`` for ``affine = (scale, shift)`` of :meth:`folded_affine` (or of
        :func:`folded_affines`), ``ĥ`` the features normalised by ``norm`` without its affine map."""
        self._check_channels(h)
        if affine is None:
            return norm(h)
        scale, shift = affine
        if self._check_norm(norm):
            return modulated_layer_norm(h, scale, shift, norm.eps, backend or "torch")
        unit = F.group_norm(h, norm.num_groups, eps=norm.eps)
        return torch.addcmul(self._per_channel(shift, unit), unit, self._per_channel(scale, unit))


def _fold_norm_affine(scale, shift, weight, bias):
    """``(γ scale, β scale + shift)``, broadcasting ``γ``, ``β`` over the leading dimensions."""
    if weight is None:
        return scale, shift
    shift = torch.addcmul(shift, bias, scale) if bias is not None else shift
    return scale * weight, shift


def _signature(film: FiLM, norm: nn.Module) -> tuple:
    """What (film, norm) pairs must share to be computed together."""
    return (film.channels, film.channels_last, film.time is None, film.latent is None, type(norm)) + tuple(
        getattr(norm, name) is None for name in ("weight", "bias")
    )


def _stacked_affines(films: Sequence[FiLM], norms: Sequence[nn.Module], t_emb, z) -> torch.Tensor:
    """``(n, 2, B, C)``: the folded ``(scale, shift)`` of ``n`` alike pairs, from one projection of ``e_t`` and
    of ``z`` for all of them (the films' weights concatenated, their second latent layers as one batched
    product), so ``n`` films cost what one costs in operators."""
    first, n, c = films[0], len(films), films[0].channels
    scale = shift = None
    if first.time is not None:
        weight = torch.cat([f.time[1].weight for f in films])  # (n·2C, T): film-major rows, as each chunk(2)
        bias = torch.cat([f.time[1].bias for f in films])
        projected = F.linear(first.time[0](t_emb), weight, bias)  # (B, n·2C)
        s_t, shift = projected.view(-1, n, 2, c).permute(2, 1, 0, 3)  # each (n, B, C)
        scale = 1 + s_t
    if first.latent is not None:
        inner = torch.cat([f.latent[0].weight for f in films]), torch.cat([f.latent[0].bias for f in films])
        hidden = first.latent[1](F.linear(z, *inner)).view(-1, n, c).transpose(0, 1)  # (n, B, C)
        weight = torch.stack([f.latent[2].weight for f in films]).transpose(1, 2)  # (n, C, C), input-major
        bias = torch.stack([f.latent[2].bias for f in films]).unsqueeze(1)
        s_z = 1 + torch.baddbmm(bias, hidden, weight)
        scale = s_z if scale is None else scale * s_z
        shift = torch.zeros_like(scale) if shift is None else shift * s_z
    norm = norms[0]
    if norm.weight is not None:
        weight = torch.stack([m.weight for m in norms]).unsqueeze(1)
        bias = None if norm.bias is None else torch.stack([m.bias for m in norms]).unsqueeze(1)
        scale, shift = _fold_norm_affine(scale, shift, weight, bias)
    return torch.stack((scale, shift), 1)  # contiguous, so each pair's (B, C) rows are too


def folded_affines(
    pairs: Sequence[Tuple[FiLM, nn.Module]], t_emb: Optional[torch.Tensor] = None, z: Optional[torch.Tensor] = None
) -> List[Optional[Tuple[torch.Tensor, torch.Tensor]]]:
    """:meth:`FiLM.folded_affine` of every ``(film, norm)`` pair, the same values in far fewer operators.

    A network's blocks condition on the same ``e_t`` and ``z``; pairs alike in shape (a sparse path's
    blocks are) are computed together by :func:`_stacked_affines`: about twenty operators forward for
    any number of them, where each pair alone takes about a dozen.  On a GPU every one is a kernel
    launch on ``(B, C)`` numbers, so the saving is host time.
    """
    out: List[Optional[Tuple[torch.Tensor, torch.Tensor]]] = [None] * len(pairs)
    groups = {}
    for i, (film, norm) in enumerate(pairs):
        film._require("t_emb", film.time, t_emb)
        film._require("z", film.latent, z)
        if film.time is not None or film.latent is not None:
            film._check_norm(norm)
            groups.setdefault(_signature(film, norm), []).append(i)
    for members in groups.values():
        stacked = _stacked_affines([pairs[i][0] for i in members], [pairs[i][1] for i in members], t_emb, z)
        for i, (scale, shift) in zip(members, stacked):
            out[i] = scale, shift
    return out


def block_affines(
    blocks: Sequence[nn.Module], t_emb: Optional[torch.Tensor] = None, z: Optional[torch.Tensor] = None
) -> Dict[nn.Module, List[Optional[Tuple[torch.Tensor, torch.Tensor]]]]:
    """``{block: the folded (scale, shift) of each pair of block.modulated_norms()}`` for a network's blocks,
    computed together (:func:`folded_affines`): they all condition on the same ``e_t`` and ``z``.  A block
    given this mapping reads its own entry instead of projecting ``e_t`` and ``z`` itself."""
    owners = [(block, pair) for block in blocks for pair in block.modulated_norms()]
    out: Dict[nn.Module, List[Optional[Tuple[torch.Tensor, torch.Tensor]]]] = {block: [] for block in blocks}
    for (block, _), affine in zip(owners, folded_affines([pair for _, pair in owners], t_emb, z)):
        out[block].append(affine)
    return out


def own_affines(block: nn.Module, t_emb: Optional[torch.Tensor], z: Optional[torch.Tensor], affines=None) -> list:
    """``block``'s entry of ``affines`` (:func:`block_affines`), or its pairs' folded affines computed alone."""
    if affines is not None:
        return affines[block]
    return [film.folded_affine(norm, t_emb, z) for film, norm in block.modulated_norms()]
