"""Where one training step's time goes: the compiled kernels and the optimiser from a profile of
the step, and the coarse-grid U-Nets timed alone on the inputs the step gave them.

A profiler attributes a forward operator's time to it but scatters a sub-network's backward over
autograd nodes, so the U-Nets are not read off the profile: their forward and backward are timed
on their own, on copies of the inputs one step passed them, as a fraction of the step's median
time.  On a GPU the profiled parts are the device time of the kernels launched under each
operator, over the step's synchronised wall time; there ``gpu_busy`` is the time of every kernel the
step launched over that wall time, apart from the fractions: near 1 the GPU bounds the step, well
below it the host does (Python and the dispatcher launching kernels faster than the GPU needs them).
Beside the fractions: the operators one step dispatches (:func:`dispatched_operators`, any device),
and on a GPU the kernels it launches, the counts a host-bound step's time follows.
"""

from __future__ import annotations

import time
from typing import Callable, Dict, List, Tuple

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from bench_common import cuda_kernel_events, interleaved_medians, synchronizer
from infdiff.train.compile import static_shape_parts

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


def _event_seconds(event, device: torch.device) -> float:
    if device.type != "cuda":
        return event.cpu_time_total / 1e6
    device_time = getattr(event, "device_time_total", None)  # torch >= 2.4; cuda_time_total before
    return (device_time if device_time is not None else event.cuda_time_total) / 1e6


def profiled_fractions(step: Callable[[], object], device: torch.device) -> Tuple[Dict[str, float], Dict[str, float]]:
    """Fractions of one profiled step spent in each :data:`PROFILED_PARTS` part, and on a GPU the
    kernels' busy share of it and their number (:func:`_gpu_busy`)."""
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
    """``{"gpu_busy": kernel seconds / wall seconds, "gpu_kernels": kernels launched}`` on a GPU, else nothing."""
    if device.type != "cuda":
        return {}
    kernels = cuda_kernel_events(profile)
    return {"gpu_busy": sum(e.time_range.elapsed_us() for e in kernels) / 1e6 / total, "gpu_kernels": len(kernels)}


class _OperatorCount(TorchDispatchMode):
    """Counts the operators dispatched under it: those returning a view of an input apart (no kernel runs
    for them) from those that compute (each one launch or more on a GPU)."""

    def __init__(self):
        super().__init__()
        self.counts = {"computing": 0, "views": 0}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        view = any(r.alias_info is not None and not r.alias_info.is_write for r in func._schema.returns)
        self.counts["views" if view else "computing"] += 1
        return func(*args, **(kwargs or {}))


def dispatched_operators(step: Callable[[], object]) -> Dict[str, int]:
    """``{"computing": n, "views": m}``: the ATen and custom operators one run of ``step`` dispatches,
    forward, backward and optimiser (a host that launches each in tens of microseconds spends
    ``n`` times that per step whatever the GPU does)."""
    with _OperatorCount() as count:
        step()
    return count.counts


def _captured_calls(model: nn.Module, step: Callable[[], object]) -> List[Tuple[nn.Module, tuple, dict]]:
    """Each coarse-grid network's call during one step (the model's static-shape parts,
    :func:`~infdiff.train.compile.static_shape_parts`), with detached copies of its tensor arguments."""
    calls = []

    def record(module, args, kwargs):
        keep = lambda v: v.detach().clone() if isinstance(v, torch.Tensor) else v  # noqa: E731
        calls.append((module, tuple(keep(a) for a in args), {k: keep(v) for k, v in kwargs.items()}))

    modules = dict(model.named_modules())
    hooks = [modules[name].register_forward_pre_hook(record, with_kwargs=True) for name in static_shape_parts(model)]
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
    count_operators: bool = True,
) -> Dict[str, Dict[str, float]]:
    """Where a step goes: ``fractions`` of it (:data:`PROFILED_PARTS`, ``grid_unet`` timed alone, ``other``;
    on a GPU also ``gpu_busy``, the kernels' share of its wall time, which is not a part of the step) and
    ``counts`` (with ``count_operators``, :func:`dispatched_operators`, which means little for a compiled
    model, whose fused kernels it does not see; on a GPU also ``gpu_kernels``, the kernels it launched)."""
    fractions, busy = profiled_fractions(step, device)
    fractions["grid_unet"] = grid_network_seconds(model, step, autocast, repeats, device) / step_seconds
    fractions["other"] = max(0.0, 1 - sum(fractions.values()))
    counts = {f"operators_{kind}": n for kind, n in dispatched_operators(step).items()} if count_operators else {}
    if "gpu_kernels" in busy:
        counts["gpu_kernels"] = busy.pop("gpu_kernels")
    return {"fractions": {**fractions, **busy}, "counts": counts}
