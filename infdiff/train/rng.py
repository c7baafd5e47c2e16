"""Capture and restore every random number generator a training run draws from.

Restoring the captured state makes a resumed run draw exactly the numbers the
uninterrupted run would have drawn. The state is per process: in a multi-process
run each process must save and restore its own. It holds only tensors and plain Python
values, so checkpoints that contain it load with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import random
import warnings
from typing import Any, Dict, Sequence

SEED_STRIDE = 1_000_003  # a prime larger than any step, batch offset or process count mixed in

import numpy as np
import torch


def mixed_seed(seed: int, *parts: int) -> int:
    """One seed from a run's ``seed`` and further integers (epoch, batch offset, process index, ...).

    ``((seed · P + parts[0]) · P + parts[1]) · ...`` with the prime ``P`` = :data:`SEED_STRIDE`:
    distinct tuples of parts below ``P`` give distinct seeds, so every stream is its own.
    """
    for part in parts:
        seed = seed * SEED_STRIDE + int(part)
    return seed


def capture_rng_state(generators: Sequence[torch.Generator] = ()) -> Dict[str, Any]:
    """States of Python ``random``, numpy's global generator, torch CPU, every CUDA device and ``generators``."""
    return {
        "python": random.getstate(),
        "numpy": _numpy_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "generators": [g.get_state() for g in generators],
    }


def restore_rng_state(state: Dict[str, Any], generators: Sequence[torch.Generator] = ()) -> None:
    """Restore a :func:`capture_rng_state` result; ``generators`` must match those captured, in order.

    CUDA states are restored for the devices present in both the capture and this
    process; a different device count warns, since draws on the others will differ.
    """
    if len(generators) != len(state["generators"]):
        raise ValueError(
            f"the RNG state holds {len(state['generators'])} torch.Generator states but "
            f"{len(generators)} generators were given to restore; pass the same generators, in the same order"
        )
    random.setstate(state["python"])
    _restore_numpy(state["numpy"])
    torch.set_rng_state(state["torch"].cpu())
    _restore_cuda(state["cuda"])
    for generator, generator_state in zip(generators, state["generators"]):
        generator.set_state(generator_state.cpu())


def _numpy_state() -> Dict[str, Any]:
    """numpy's legacy global state with the MT19937 key as an int64 tensor instead of an ndarray."""
    name, key, position, has_gauss, cached_gaussian = np.random.get_state()
    return {
        "bit_generator": name,
        "key": torch.from_numpy(key.astype(np.int64)),
        "position": int(position),
        "has_gauss": int(has_gauss),
        "cached_gaussian": float(cached_gaussian),
    }


def _restore_numpy(state: Any) -> None:
    """Set numpy's global state from :func:`_numpy_state`, or from the tuple older checkpoints stored."""
    if isinstance(state, dict):
        key = state["key"].numpy().astype(np.uint32)
        state = (state["bit_generator"], key, state["position"], state["has_gauss"], state["cached_gaussian"])
    np.random.set_state(state)


def _restore_cuda(states: Sequence[torch.Tensor]) -> None:
    """Set the RNG state of each CUDA device that has a captured state."""
    available = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if len(states) != available:
        warnings.warn(
            f"RNG state was captured on {len(states)} CUDA device(s) but {available} are available; "
            f"restoring the first {min(len(states), available)}, so CUDA random draws will not match the original run",
            RuntimeWarning,
            stacklevel=3,
        )
    for device, device_state in enumerate(states[:available]):
        torch.cuda.set_rng_state(device_state.cpu(), device)
