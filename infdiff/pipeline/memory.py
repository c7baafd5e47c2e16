"""How much memory decoding at a size takes, measured on small probes, so that a call that cannot fit is
refused with a number before it starts instead of dying in the allocator (``std::bad_alloc``, CUDA OOM).

∞-Diff's decoder runs its sparse front on every pixel and its U-Net on a fixed ``uno_res`` grid, so the
peak of one decoding is ``a₀ + B·(a₁ + b·P)`` for ``B`` samples of ``P`` pixels.  :class:`DecodingMemory`
measures the peak at three probes (one step, ``B`` ∈ {1, 2}, sides 16 and 32) by counting the bytes of
live tensors (:class:`PeakTensorBytes`), solves for ``a₀, a₁, b`` and extrapolates.
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass
from typing import Dict, Optional

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from infdiff.pipeline.build import SamplerSpec
from infdiff.train.config import ConfigError

GIB = 1 << 30
HEADROOM = 0.9  # of the free memory a decoding may plan to use
PROBE_SIDES = (16, 32)


class PeakTensorBytes(TorchDispatchMode):
    """While active, :attr:`peak` is the most bytes held at once by tensors created inside it.

    Each new storage an op returns is counted until it is freed (a finalizer on the storage), so views
    are counted once and tensors made before entering are not counted.
    """

    def __init__(self):
        super().__init__()
        self.live: Dict[int, int] = {}
        self.current = 0
        self.peak = 0

    def _freed(self, key: int) -> None:
        self.current -= self.live.pop(key, 0)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in tree_flatten(out)[0]:
            if isinstance(tensor, torch.Tensor) and tensor.device.type != "meta":
                storage = tensor.untyped_storage()
                key = storage._cdata
                if key not in self.live:
                    self.live[key] = storage.nbytes()
                    self.current += storage.nbytes()
                    weakref.finalize(storage, self._freed, key)
        self.peak = max(self.peak, self.current)
        return out


def _probe(decoder, batch: int, side: int, device) -> int:
    """Peak bytes of one one-step decoding of ``batch`` samples at ``side × side``."""
    z = torch.zeros(batch, decoder.model.z_dim, device=device)
    with PeakTensorBytes() as measured:
        decoder.decode(z, side, SamplerSpec("ddim", 1), torch.Generator(device=device).manual_seed(0))
    return measured.peak


@dataclass(frozen=True)
class DecodingMemory:
    """Peak bytes of decoding: ``fixed + B·(per_sample + per_pixel·P)``, plus noise drawn on a finer grid."""

    fixed: float
    per_sample: float
    per_pixel: float
    channels: int

    @classmethod
    def measure(cls, decoder, device="cpu") -> "DecodingMemory":
        """Solve for the three terms from one-step decodings of 1 and 2 samples at :data:`PROBE_SIDES`."""
        small, large = (side * side for side in PROBE_SIDES)
        one_small, one_large = (_probe(decoder, 1, side, device) for side in PROBE_SIDES)
        two_small = _probe(decoder, 2, PROBE_SIDES[0], device)
        per_pixel = max(0.0, (one_large - one_small) / (large - small))
        per_sample = max(0.0, two_small - one_small - per_pixel * small)
        fixed = max(0.0, one_small - per_sample - per_pixel * small)
        return cls(fixed, per_sample, per_pixel, decoder.model.channels)

    def bytes(self, size: int, batch: int, noise_size: Optional[int] = None) -> float:
        """Estimated peak of decoding ``batch`` samples at ``size × size`` (noise drawn at ``noise_size``)."""
        noise = 2 * 4 * batch * self.channels * noise_size**2 if noise_size else 0
        return self.fixed + batch * (self.per_sample + self.per_pixel * size * size) + noise


def free_bytes(device) -> Optional[int]:
    """Memory free for tensors on ``device``: CUDA's free memory plus its cache's unused part, or the
    host's ``MemAvailable`` (Linux); ``None`` where it cannot be read."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    try:
        with open("/proc/meminfo") as meminfo:
            fields = dict(line.split(":", 1) for line in meminfo)
        return int(fields["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return None


def check_decoding_fits(decoder, size: int, batch: int, noise_size: Optional[int] = None, device="cpu") -> None:
    """Raise a :class:`ConfigError` with the estimate and the setting that fits when decoding ``batch``
    samples at ``size`` would need more than :data:`HEADROOM` of the free memory."""
    free = free_bytes(device)
    if free is None:
        return
    budget = HEADROOM * free
    memory = DecodingMemory.measure(decoder, device)
    need = memory.bytes(size, batch, noise_size)
    if need <= budget:
        return
    message = (
        f"--sample_img_size {size} with --batch_size {batch}: decoding needs about {need / GIB:.1f} GiB of "
        f"{torch.device(device).type} memory but {free / GIB:.1f} GiB are free"
    )
    fits = next((b for b in range(batch - 1, 0, -1) if memory.bytes(size, b, noise_size) <= budget), None)
    if fits is not None:
        raise ConfigError(f"{message}; --batch_size {fits} fits")
    room = budget - memory.fixed - memory.per_sample
    largest = int(math.sqrt(room / memory.per_pixel)) if room > 0 and memory.per_pixel > 0 else 0
    raise ConfigError(
        f"{message}; even one sample needs {memory.bytes(size, 1, noise_size) / GIB:.1f} GiB, and the largest "
        f"--sample_img_size that fits one sample (without --noise_size) is about {largest}"
    )
