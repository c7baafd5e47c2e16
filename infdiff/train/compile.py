"""``torch.compile`` of the parts of a network whose input shapes do not change from step to step.

``train.compile_scope`` says which parts (:data:`COMPILE_SCOPES`):

* ``grid`` (the default): the submodules whose class has ``static_shapes = True``, ∞-Diff's
  coarse-grid U-Nets, whose grid's size is the config's whatever the number of pixels a step
  keeps; the sparse parts around them stay eager.
* ``network``: the whole network, sparse parts and kNN included, traced as one graph.  A training
  step keeps the same number of pixels (``loss.points``) of the same batch every time, so its
  shapes are static too; the sparse kernels are custom operators with fake kernels
  (:mod:`infdiff.ops.backends`), which the graph calls as they are, and with ``reduce-overhead``
  the whole forward and backward replay as CUDA graphs: one launch per graph instead of one per
  operator.  A call with other shapes (another batch size, sampling at another resolution) compiles
  again for those shapes.

Compiled in place (``nn.Module.compile``), a part keeps its parameters, its ``state_dict`` keys and
its checkpoints; ``dynamic=False``, since the shapes are meant to repeat.

Why: a step of the paper's FFHQ-256 configuration dispatches about 2,200 computing operators
(``benchmarks/results/stage1_ffhq256_operators_cpu.json``, counted on the CPU), so a host that launches
each in a few tens of microseconds spends ~0.1 s per step whatever the GPU does; inductor fuses
element-wise chains into fewer kernels, and ``reduce-overhead`` replays them as CUDA graphs.
"""

from __future__ import annotations

import os
from typing import List

import torch
from torch import nn

from infdiff.registry import Registry
from infdiff.train.config import ConfigError

COMPILE_MODES = ("none", "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
"""``train.compile``: ``none``, or the ``torch.compile`` mode the static-shape parts are compiled with."""

CUDA_GRAPH_MODES = ("reduce-overhead", "max-autotune")  # the modes that replay CUDA graphs

COMPILER_BACKEND = os.environ.get("INFDIFF_COMPILE_BACKEND", "inductor")
"""The ``torch.compile`` backend: inductor, unless ``$INFDIFF_COMPILE_BACKEND`` names another (``aot_eager``
traces as inductor would without generating code: for finding what breaks a trace, and for tests)."""


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


COMPILE_SCOPES = Registry("compile scope")
"""``train.compile_scope``: what of a network is compiled, as a function of the model giving the names of
the submodules to compile (``""``: the model itself)."""
COMPILE_SCOPES.register("grid", static_shape_parts)
COMPILE_SCOPES.register("network", lambda model: [""])


def check_compile_scope(scope: str, key: str = "train.compile_scope") -> None:
    if scope not in COMPILE_SCOPES:
        raise ValueError(f"{key}={scope!r}; expected one of {COMPILE_SCOPES.names()}")


def compile_parts(model: nn.Module, mode: str, scope: str = "grid", backend: str | None = None) -> List[str]:
    """Compile the parts of ``model`` that ``scope`` names (:data:`COMPILE_SCOPES`) in place with ``mode``
    (:data:`COMPILE_MODES`; ``none`` compiles nothing) and return their names (``""``: the whole model).

    ``fullgraph``: a part that dynamo cannot trace in one graph is an error at its first call, not a
    silent half-compiled network.  A deep copy of a compiled part (the EMA's) is eager: torch leaves
    the compiled call out of the copy.
    """
    check_compile_mode(mode)
    check_compile_scope(scope)
    if mode == "none":
        return []
    backend = _known_backend(backend or COMPILER_BACKEND)
    names = COMPILE_SCOPES[scope](model)
    modules = dict(model.named_modules())
    for name in names:
        modules[name].compile(
            backend=backend,
            mode=None if mode == "default" else mode,
            fullgraph=True,
            dynamic=False,
        )
    return names


def _known_backend(backend):
    """``backend`` if ``torch.compile`` knows it, else a one-line error naming where it came from."""
    from torch._dynamo.backends.registry import list_backends, lookup_backend
    from torch._dynamo.exc import InvalidBackend

    try:
        lookup_backend(backend)
    except InvalidBackend:
        raise ConfigError(
            f"$INFDIFF_COMPILE_BACKEND={backend!r} is no torch.compile backend; expected one of "
            f"{list_backends(exclude_tags=())}"
        ) from None
    return backend


def begin_step(mode: str) -> None:
    """Tell the CUDA-graph modes a new training step begins (``torch.compiler.cudagraph_mark_step_begin``),
    so a replay may reuse the memory of the last step's outputs; nothing for the other modes."""
    if mode in CUDA_GRAPH_MODES:
        torch.compiler.cudagraph_mark_step_begin()
