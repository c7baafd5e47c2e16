"""Where one training step's time goes: the compiled kernels and the optimiser from a profile of
the step, and the coarse-grid U-Nets timed alone on the inputs the step gave them.

A profiler attributes a forward operator's time to it but scatters a sub-network's backward over
autograd nodes, so the U-Nets are not read off the profile: their forward and backward are timed
on their own, on copies of the inputs one step passed them, as a fraction of the step's median
time.  On a GPU the profiled parts are the device time of the kernels launched under each
operator, over the step's synchronised wall time; there ``gpu_busy`` is the time of every kernel the
step launched over that wall time, apart from the fractions: near 1 the GPU bounds the step, well
below it the host does (Python and the dispatcher launching kernels faster than the GPU needs them).
"""

from __future__ import annotations

import time
from typing import Callable, Dict, List, Tuple

import torch
from torch import nn

from bench_common import interleaved_medians, synchronizer
from infdiff.nn.uno import UNO, UNOEncoder

PROFILED_PARTS = {
    "sparse_conv": (
        "infdiff::gather_conv",
        "infdiff::gather_conv_weight",
        "infdiff::window_conv",
        "infdiff::window_conv_weight",
    ),
    "neighbour_table": ("infdiff::neighbour_table",),
    "knn": ("infdiff::knn_window",),
    "modulated_norm": ("infdiff::modulated_layer_norm", "infdiff::modulated_layer_norm_backward"),
    "optimiser": ("optimiser",),
}
GRID_NETWORKS = (UNO, UNOEncoder)


def _event_seconds(event, device: torch.device) -> float:
    if device.type != "cuda":
        return event.cpu_time_total / 1e6
    device_time = getattr(event, "device_time_total", None)  # torch >= 2.4; cuda_time_total before
    return (device_time if device_time is not None else event.cuda_time_total) / 1e6


def profiled_fractions(step: Callable[[], object], device: torch.device) -> Tuple[Dict[str, float], Dict[str, float]]:
    """Fractions of one profiled step spent in each :data:`PROFILED_PARTS` part, and on a GPU the
    kernels' busy share of it (:func:`_gpu_busy`)."""
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    sync = synchronizer(device.type)
    with torch.profiler.profile(activities=activities) as profile:
        sync()
        start = time.perf_counter()
        step()
        sync()
        total = time.perf_counter() - start
    spent = {name: 0.0 for name in PROFILED_PARTS}
    for event in profile.key_averages():
        for name, keys in PROFILED_PARTS.items():
            if event.key in keys:
                spent[name] += _event_seconds(event, device)
    return {name: seconds / total for name, seconds in spent.items()}, _gpu_busy(profile, device, total)


def _gpu_busy(profile, device: torch.device, total: float) -> Dict[str, float]:
    """``{"gpu_busy": kernel seconds / wall seconds}`` on a GPU, else nothing."""
    if device.type != "cuda":
        return {}
    kernels = [e for e in profile.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    return {"gpu_busy": sum(e.time_range.elapsed_us() for e in kernels) / 1e6 / total}


def outermost_grid_networks(model: nn.Module) -> List[nn.Module]:
    """The :data:`GRID_NETWORKS` of ``model`` not inside another one (a U-Net holds its encoder)."""
    found = []
    for name, module in model.named_modules():
        if isinstance(module, GRID_NETWORKS) and not any(name.startswith(outer + ".") for outer, _ in found):
            found.append((name, module))
    return [module for _, module in found]


def _captured_calls(model: nn.Module, step: Callable[[], object]) -> List[Tuple[nn.Module, tuple, dict]]:
    """Each grid network's call during one step, with detached copies of its tensor arguments."""
    calls = []

    def record(module, args, kwargs):
        keep = lambda v: v.detach().clone() if isinstance(v, torch.Tensor) else v  # noqa: E731
        calls.append((module, tuple(keep(a) for a in args), {k: keep(v) for k, v in kwargs.items()}))

    hooks = [m.register_forward_pre_hook(record, with_kwargs=True) for m in outermost_grid_networks(model)]
    try:
        step()
    finally:
        for hook in hooks:
            hook.remove()
    return calls


def grid_network_seconds(
    model: nn.Module, step: Callable[[], object], autocast: Callable[[], object], repeats: int, device: torch.device
) -> float:
    """Median seconds of the coarse-grid U-Nets' forward and backward alone, on one step's inputs.

    Gradients flow into every floating-point argument too (as they do inside the step); the
    parameters' gradients this leaves are cleared.
    """
    calls = _captured_calls(model, step)
    if not calls:
        return 0.0

    def run():
        outputs, grads = [], []
        for module, args, kwargs in calls:
            live = tuple(
                a.requires_grad_() if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in args
            )
            with autocast():
                out = module(*live, **kwargs)
            for tensor in out if isinstance(out, (tuple, list)) else (out,):
                if isinstance(tensor, torch.Tensor) and tensor.requires_grad:
                    outputs.append(tensor)
                    grads.append(torch.ones_like(tensor))
        torch.autograd.backward(outputs, grads)
        for module, args, _ in calls:
            for a in args:
                if isinstance(a, torch.Tensor):
                    a.grad = None

    seconds = interleaved_medians({"grid": run}, repeats, device.type)["grid"]
    model.zero_grad(set_to_none=True)
    return seconds


def step_breakdown(
    model: nn.Module,
    step: Callable[[], object],
    step_seconds: float,
    autocast: Callable[[], object],
    repeats: int,
    device: torch.device,
) -> Dict[str, float]:
    """Fractions of a step: :data:`PROFILED_PARTS`, ``grid_unet`` (timed alone) and ``other``; on a GPU
    also ``gpu_busy`` (not a part of the step: the kernels' share of its wall time)."""
    fractions, busy = profiled_fractions(step, device)
    fractions["grid_unet"] = grid_network_seconds(model, step, autocast, repeats, device) / step_seconds
    fractions["other"] = max(0.0, 1 - sum(fractions.values()))
    return {**fractions, **busy}
