"""``torch.compile`` of the parts of a network whose input shapes do not change from step to step.

A network marks such a part by a class attribute ``static_shapes = True`` (∞-Diff's coarse-grid
U-Nets: the grid's size is fixed by the config, whatever the number of pixels the step keeps).
Compiled in place (``nn.Module.compile``), a part keeps its parameters, its ``state_dict`` keys and
its checkpoints; dynamo traces it once per input shape, so the sparse parts around it, whose point
counts and neighbour lookups are data-dependent, stay eager.

Why: a step of the paper's FFHQ-256 configuration dispatches about 2,900 computing operators
(``benchmarks/results/stage1_ffhq256_operators_cpu.json``, counted on the CPU), so a host that launches
each in a few tens of microseconds spends ~0.15 s per step whatever the GPU does; inductor fuses
the U-Nets' element-wise chains into fewer kernels, and ``reduce-overhead`` replays them as CUDA graphs.
"""

from __future__ import annotations

from typing import List

import torch
from torch import nn

COMPILE_MODES = ("none", "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
"""``train.compile``: ``none``, or the ``torch.compile`` mode the static-shape parts are compiled with."""

CUDA_GRAPH_MODES = ("reduce-overhead", "max-autotune")  # the modes that replay CUDA graphs

COMPILER_BACKEND = "inductor"


def check_compile_mode(mode: str, key: str = "train.compile") -> None:
    if mode not in COMPILE_MODES:
        raise ValueError(f"{key}={mode!r}; expected one of {list(COMPILE_MODES)}")


def static_shape_parts(model: nn.Module) -> List[str]:
    """Names of the submodules of ``model`` marked ``static_shapes`` and not inside another one."""
    found: List[str] = []
    for name, module in model.named_modules():
        if getattr(type(module), "static_shapes", False) and not any(
            outer == "" or name.startswith(outer + ".") for outer in found
        ):
            found.append(name)
    return found


def compile_static_parts(model: nn.Module, mode: str, backend: str | None = None) -> List[str]:
    """Compile every :func:`static_shape_parts` part of ``model`` in place with ``mode``
    (:data:`COMPILE_MODES`; ``none`` compiles nothing) and return their names.

    ``fullgraph``: a part that dynamo cannot trace in one graph is an error at its first call, not a
    silent half-compiled network.  A deep copy of a compiled part (the EMA's) is eager: torch leaves
    the compiled call out of the copy.
    """
    check_compile_mode(mode)
    if mode == "none":
        return []
    names = static_shape_parts(model)
    modules = dict(model.named_modules())
    for name in names:
        modules[name].compile(
            backend=backend or COMPILER_BACKEND, mode=None if mode == "default" else mode, fullgraph=True
        )
    return names


def begin_step(mode: str) -> None:
    """Tell the CUDA-graph modes a new training step begins (``torch.compiler.cudagraph_mark_step_begin``),
    so a replay may reuse the memory of the last step's outputs; nothing for the other modes."""
    if mode in CUDA_GRAPH_MODES:
        torch.compiler.cudagraph_mark_step_begin()
