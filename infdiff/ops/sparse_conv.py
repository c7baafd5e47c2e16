"""Depthwise convolution as a Monte-Carlo integral operator on sparse or dense pixel sets.

∞-Diff (Bond-Taylor & Willcocks 2024, §4.1) approximates the integral operator
``(K x)(u) = ∫ κ(u - v) x(v) dv`` on a random subset of pixels by a submanifold depthwise
convolution divided by the fraction of the kernel window that is present:

    out(u) = Σ_o w_o x(u + o) · m(u + o)  /  ( Σ_o m(u + o) / k0² )

with ``m`` the occupancy mask and ``k0×k0`` the kernel size at the *training* resolution.  On a
full grid of the training size the denominator is 1 in the interior, so the sparse operator
given every pixel equals the dense one.  At a grid ``r`` times finer the kernel is resized to
``k' ≈ r k0`` taps (same physical support, :func:`resize_kernel`) and the same denominator,
now ≈ ``k'² / k0²``, keeps the output a resolution-independent estimate of ``K x``.

Two paths compute the same operator: :func:`sparse_depthwise_conv` on a :class:`SparseImage`
(the ``infdiff::gather_conv`` operator over a neighbour table, or ``window_conv`` looking the
neighbours up in the index map, :data:`NEIGHBOURS`; :mod:`infdiff.ops.backends`: compiled kernels
or the PyTorch reference; nothing of size ``(M, k², C)`` stored for backward; the kernels apply
the denominator as a row scale, :func:`inverse_normaliser`, in the same pass) and
:func:`dense_depthwise_conv` on ``(B, C, H, W)`` tensors (``F.conv2d``, channels-last).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Tuple

import torch
import torch.nn.functional as F
from torch.utils.weak import WeakTensorKeyDictionary

from infdiff.ops import backends as ops
from infdiff.ops.backends import AUTO, resolve_backend
from infdiff.ops.grid import Size, as_size, index_to_rowcol
from infdiff.ops.reference_kernels import accumulation_dtype
from infdiff.ops.sparse_image import SparseImage
from infdiff.registry import Registry

KernelSize = Tuple[int, int]


def neighbour_table(sparse: SparseImage, kernel_size: KernelSize, backend: str = AUTO) -> torch.Tensor:
    """Rows ``(kh*kw, B*N)`` of each point's neighbours in the flattened ``(B*N, C)`` values.

    Row ``j`` holds, for every point ``p``, the flat position of the point at ``p + offset_j``
    (row-major offsets, as ``F.conv2d``), or ``B*N`` when that pixel is outside the grid or
    absent.  Cached on the image, so every block of a network shares one table per kernel size.
    """

    def compute():
        kh, kw = kernel_size
        h, w = sparse.size
        chosen = resolve_backend(backend, sparse.index.device.type)
        return ops.neighbour_table(sparse.index, sparse.index_map(), h, w, kh, kw, chosen)

    return sparse.cached(("neighbours", tuple(kernel_size)), compute)


def window_counts(sparse: SparseImage, kernel_size: KernelSize) -> torch.Tensor:
    """``(B*N,)`` present pixels in each point's ``kh×kw`` window (itself included), exactly.

    A box sum of the occupancy mask read off its summed-area table ``S``:
    ``count = S[r1, c1] - S[r0, c1] - S[r1, c0] + S[r0, c0]`` with the window clipped to the grid.
    """
    kh, kw = kernel_size
    h, w = sparse.size
    occupied = (sparse.index_map() >= 0).view(sparse.batch, h, w)
    summed = F.pad(occupied.cumsum(1).cumsum(2), (1, 0, 1, 0)).flatten(1)  # (B, (H+1)(W+1)), int64
    row, col = index_to_rowcol(sparse.index, sparse.size)
    r0, r1 = (row - kh // 2).clamp(min=0), (row + kh // 2 + 1).clamp(max=h)
    c0, c1 = (col - kw // 2).clamp(min=0), (col + kw // 2 + 1).clamp(max=w)

    def at(r, c):
        return torch.gather(summed, 1, r * (w + 1) + c)

    return (at(r1, c1) - at(r0, c1) - at(r1, c0) + at(r0, c0)).flatten()


def inverse_normaliser(sparse: SparseImage, kernel_size: KernelSize, train_kernel_size: KernelSize) -> torch.Tensor:
    """``(B*N,)`` inverse of the Monte-Carlo normaliser, ``k0² / (present neighbours in the window)``, in
    the values' accumulation dtype: the row scale the convolution kernels apply.  A point is its own
    neighbour, so no count is zero."""

    def compute():
        count = window_counts(sparse, kernel_size).to(accumulation_dtype(sparse.values.dtype))
        return (train_kernel_size[0] * train_kernel_size[1]) / count

    key = ("inverse_normaliser", tuple(kernel_size), tuple(train_kernel_size), sparse.values.dtype)
    return sparse.cached(key, compute)


NEIGHBOURS = Registry("neighbour lookup")
"""How the sparse convolution finds each point's neighbours (``model.neighbours``).

``table`` (the default) reads a ``(k², B·N)`` int32 table built once per kernel size and shared by
every convolution of the image (4 k² bytes per point, kept for backward); ``window`` looks them up
in the ``(B, H·W)`` index map inside the kernels, so autograd keeps nothing per point beyond the
values.  Measured on the 2-core CPU: a lone convolution (``benchmarks/sparse_conv.py``, fwd+bwd,
C = 64, 7×7, 64²–256², 12.5–100 %) takes 0.76–1.16× the cached table's time with the window lookup
and keeps 0.27× the dense conv's bytes at 25 % against the table's 0.45×; in a whole stage-1 step
(``benchmarks/stage1_variants.py``, 64², six convolutions share one table) the window lookup costs
1.13× the step time at a quarter of the pixels for the same peak memory (0.324× the dense step's
against 0.326×), so the table is the default and the window is for when per-op memory binds."""


@NEIGHBOURS.register("table")
def _conv_by_table(sparse, flat, weight, kernel_size, scale, backend):
    table = neighbour_table(sparse, kernel_size, backend)
    return ops.differentiable("gather_conv", backend)(flat, weight, table, scale, False)


@NEIGHBOURS.register("window")
def _conv_by_window(sparse, flat, weight, kernel_size, scale, backend):
    index = sparse.cached("index_int32", lambda: sparse.index.to(torch.int32))
    index_map = sparse.cached("index_map_int32", lambda: sparse.index_map().to(torch.int32))
    conv = ops.differentiable("window_conv", backend)
    return conv(flat, weight, index, index_map, *sparse.size, *kernel_size, scale, False)


def sparse_depthwise_conv(
    sparse: SparseImage,
    weight: torch.Tensor,
    train_kernel_size: KernelSize | None = None,
    backend: str = AUTO,
    neighbours: str = "table",
) -> SparseImage:
    """Normalised depthwise convolution of a sparse image by ``weight`` ``(C, kh, kw)``.

    ``train_kernel_size`` (default: the kernel's own size) sets the ``k0²`` of the normaliser;
    ``backend`` names the kernels (:data:`~infdiff.ops.backends.BACKENDS`, or ``auto``) and
    ``neighbours`` how they find the neighbours (:data:`NEIGHBOURS`).
    """
    c, kh, kw = _check_weight(weight, sparse.channels)
    train_kernel_size = (kh, kw) if train_kernel_size is None else tuple(train_kernel_size)
    flat = sparse.values.reshape(-1, c)
    chosen = resolve_backend(backend, flat.device.type)
    scale = inverse_normaliser(sparse, (kh, kw), train_kernel_size)
    out = NEIGHBOURS[neighbours](sparse, flat, weight.reshape(c, kh * kw).to(flat.dtype), (kh, kw), scale, chosen)
    return sparse.with_values(out.view_as(sparse.values))


FFT_MIN_TAPS = 31 * 31
"""Kernels of at least this many taps are applied on the dense path by FFT.  Measured on the 2-core
CPU (one 64-channel image, forward, ``benchmarks/dense_conv_fft.py``): the channels-last direct
conv is faster up to about 21×21 taps and the FFT from about 31×31 at 64²–256²; such kernels
appear when sampling at 4× the training size and above (7 taps become 27, 55 at 8×)."""


def _window_count(size: int, taps: int, device) -> torch.Tensor:
    """How many of a centred ``taps`` window's positions fall inside a line of ``size`` pixels."""
    i = torch.arange(size, device=device)
    return (torch.clamp(i + taps // 2, max=size - 1) - torch.clamp(i - taps // 2, min=0) + 1).to(torch.float64)


@lru_cache(maxsize=32)
def _dense_normaliser(
    size: Size, kernel_size: KernelSize, train_kernel_size: KernelSize, device: torch.device, dtype: torch.dtype
) -> torch.Tensor:
    """Taps of the window inside the grid at each pixel, over ``k0²``: the window is a rectangle, so
    the count is the product of the per-axis counts."""
    rows, cols = _window_count(size[0], kernel_size[0], device), _window_count(size[1], kernel_size[1], device)
    count = rows[:, None] * cols[None, :] / (train_kernel_size[0] * train_kernel_size[1])
    return count.to(dtype).view(1, 1, *size)


def _fast_length(n: int) -> int:
    """The smallest length ``>= n`` whose only prime factors are 2, 3 and 5 (fast FFT sizes)."""
    while True:
        m = n
        for p in (2, 3, 5):
            while m % p == 0:
                m //= p
        if m == 1:
            return n
        n += 1


_SPECTRA = WeakTensorKeyDictionary()  # kernel -> (key, spectrum)


def _kernel_spectrum(weight: torch.Tensor, shape: Tuple[int, int], dtype: torch.dtype) -> torch.Tensor:
    """``rfft2`` of the flipped kernel; outside autograd, remembered for as long as ``weight`` lives
    unchanged (its version counter), so a sampler calling the same kernel every step transforms it once."""
    if torch.is_grad_enabled() and weight.requires_grad or torch.compiler.is_compiling():  # a graph: every call
        return torch.fft.rfft2(weight.flip(-2, -1).to(dtype), s=shape)
    key = (weight._version, shape, dtype)
    known = _SPECTRA.get(weight)
    if known is None or known[0] != key:
        known = (key, torch.fft.rfft2(weight.flip(-2, -1).to(dtype), s=shape))
        _SPECTRA[weight] = known
    return known[1]


def fft_depthwise_conv(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``F.conv2d(x, weight[:, None], padding=k // 2, groups=C)`` computed by FFT, in float32 or wider.

    Cross-correlation with ``w`` is linear convolution with the flipped ``w``; the linear
    convolution of ``(H, W)`` and ``(kh, kw)`` fits in ``(H + kh - 1, W + kw - 1)`` (rounded up to
    a fast FFT size, zeros beyond the image: the direct conv's zero padding), of which the
    ``(H, W)`` window starting at ``(kh // 2, kw // 2)`` is the padded correlation.  Cost
    ``O(HW log HW)`` per channel instead of ``O(HW kh kw)``.
    """
    _, _, h, w = x.shape
    kh, kw = weight.shape[-2:]
    work = torch.promote_types(x.dtype, torch.float32)
    shape = (_fast_length(h + kh - 1), _fast_length(w + kw - 1))
    spectrum = torch.fft.rfft2(x.to(work), s=shape) * _kernel_spectrum(weight, shape, work)
    full = torch.fft.irfft2(spectrum, s=shape)
    return full[..., kh // 2 : kh // 2 + h, kw // 2 : kw // 2 + w].to(x.dtype)


def dense_depthwise_conv(
    x: torch.Tensor, weight: torch.Tensor, train_kernel_size: KernelSize | None = None
) -> torch.Tensor:
    """The same operator on a full grid ``x`` ``(B, C, H, W)`` (every pixel present); kernels of
    :data:`FFT_MIN_TAPS` or more taps by :func:`fft_depthwise_conv`, others by ``F.conv2d``."""
    c, kh, kw = _check_weight(weight, x.shape[1])
    train_kernel_size = (kh, kw) if train_kernel_size is None else tuple(train_kernel_size)
    if kh * kw >= FFT_MIN_TAPS:
        out = fft_depthwise_conv(x, weight)
    else:
        x = x.contiguous(memory_format=torch.channels_last)
        out = F.conv2d(x, weight.unsqueeze(1).to(x.dtype), padding=(kh // 2, kw // 2), groups=c)
    # remembered per shape when eager; a compiled graph computes it inside (a constant there, folded once)
    normaliser = _dense_normaliser.__wrapped__ if torch.compiler.is_compiling() else _dense_normaliser
    norm = normaliser(as_size(tuple(x.shape[-2:])), (kh, kw), train_kernel_size, x.device, x.dtype)
    return out / norm


def resize_kernel(weight: torch.Tensor, kernel_size: KernelSize) -> torch.Tensor:
    """Bilinearly resample a ``(C, kh, kw)`` kernel to ``kernel_size`` taps over the same support."""
    if tuple(weight.shape[-2:]) == tuple(kernel_size):
        return weight
    return F.interpolate(weight.unsqueeze(0), size=tuple(kernel_size), mode="bilinear", align_corners=False).squeeze(0)


def _check_weight(weight: torch.Tensor, channels: int) -> Tuple[int, int, int]:
    if weight.dim() != 3 or weight.shape[0] != channels:
        raise ValueError(f"depthwise weight must be (C={channels}, kh, kw), got {tuple(weight.shape)}")
    c, kh, kw = weight.shape
    if kh % 2 == 0 or kw % 2 == 0:
        raise ValueError(f"kernel sizes must be odd, got {kh}x{kw}")
    return c, kh, kw
