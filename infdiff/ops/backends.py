"""The sparse kernels as ``torch.library`` custom operators, and the switch between their backends.

Every operator (``infdiff::gather_conv``, ``gather_conv_weight``, ``window_conv``,
``window_conv_weight``, ``neighbour_table``, ``knn_window``) takes the name of a resolved backend as
its last argument and runs that backend's implementation; each has a fake kernel (so
``torch.compile`` and meta tensors see its shapes) and the two convolutions have their autograd
formula here, once, for every backend.  Eager calls of the differentiable ones on a compiled backend
skip the interpreter: :func:`differentiable` hands them the same formulas in C++.  The backends
(``BACKENDS``): ``torch`` (:mod:`infdiff.ops.reference_kernels`, any device), ``cpp`` (``csrc/``
C++ with OpenMP, CPU tensors) and ``cuda`` (``csrc/`` CUDA, CUDA tensors).  A model names one in
``model.backend``; ``auto`` picks the compiled one for the tensors' device and falls back to
``torch`` with a one-line notice when it cannot be built.
"""

from __future__ import annotations

import contextlib
import functools
import sys
from dataclasses import dataclass
from types import ModuleType
from typing import Callable, Iterator, List, Optional, Tuple

import torch

from infdiff.ops import reference_kernels
from infdiff.ops.extension import ExtensionUnavailable, load_kernels
from infdiff.registry import Registry

AUTO = "auto"


@dataclass(frozen=True)
class Backend:
    """An implementation of the sparse kernels for tensors on ``device_types``."""

    description: str
    device_types: Tuple[str, ...]
    load: Callable[[], ModuleType]


BACKENDS = Registry("backend")
BACKENDS.register(
    "torch", Backend("the pure-PyTorch reference", ("cpu", "cuda", "mps", "xpu"), lambda: reference_kernels)
)
BACKENDS.register("cpp", Backend("C++/OpenMP kernels from csrc/", ("cpu",), lambda: load_kernels("cpu")))
BACKENDS.register("cuda", Backend("CUDA kernels from csrc/", ("cuda",), lambda: load_kernels("cuda")))
COMPILED_FOR = {"cpu": "cpp", "cuda": "cuda"}  # what ``auto`` tries first on each device type


def backend_names() -> List[str]:
    """What ``model.backend`` accepts."""
    return [AUTO, *BACKENDS.names()]


@torch.compiler.assume_constant_result
def resolve_backend(name: str, device_type: str) -> str:
    """The backend that runs for ``model.backend=name`` on ``device_type`` tensors.

    ``auto`` is the compiled backend of the device when it builds, else ``torch`` (said once on
    stderr).  A backend named explicitly must work: a wrong device or a failed build is an error.
    Decided once per pair (:func:`forget_resolved` starts afresh); ``torch.compile`` takes the
    answer as a constant instead of tracing the build.
    """
    return _resolved(name, device_type)


def forget_resolved() -> None:
    """Decide every backend afresh at its next use (after the kernels' availability changed)."""
    _resolved.cache_clear()
    _eager.cache_clear()


@functools.lru_cache(maxsize=None)
def _resolved(name: str, device_type: str) -> str:
    if name == AUTO:
        compiled = COMPILED_FOR.get(device_type)
        if compiled is None:
            return "torch"
        try:
            BACKENDS[compiled].load()
            return compiled
        except ExtensionUnavailable as why:
            print(f"infdiff: {why}; using the PyTorch reference kernels (model.backend=torch)", file=sys.stderr)
            return "torch"
    backend = BACKENDS[name]
    if device_type not in backend.device_types:
        raise ValueError(
            f"model.backend={name!r} runs on {' or '.join(backend.device_types)} tensors, not {device_type}; "
            f"use model.backend=auto"
        )
    try:
        backend.load()
    except ExtensionUnavailable as why:
        raise RuntimeError(f"model.backend={name!r}: {why}; use model.backend=auto or torch") from why
    return name


def kernels(backend: str) -> ModuleType:
    return BACKENDS[backend].load()


def differentiable(name: str, backend: str) -> Callable:
    """The operator ``infdiff::name`` of a resolved ``backend`` as a differentiable function of its other
    arguments (``gather_conv``, ``window_conv``, ``modulated_layer_norm``).

    Eager code gets the compiled backends' C++ autograd (``<name>_autograd`` of the kernel module,
    ``csrc/autograd_ops.h``): the same kernels and formulas as the operator's registered autograd, without
    the interpreter in the call and the backward, which is most of a small call's cost (measured in
    ``benchmarks/op_overhead.py``).  The reference backend, and code ``torch.compile`` traces, get the
    operator itself, whose fake kernel the tracer needs.
    """
    if torch.compiler.is_compiling() or _through_operators:
        return _operator(name, backend)
    return _eager(name, backend)


_through_operators = False


@contextlib.contextmanager
def through_operators() -> Iterator[None]:
    """Within the block, eager calls too take the operators and their Python autograd (not thread-safe):
    the path ``torch.compile`` traces, for comparing the two (``benchmarks/op_overhead.py``) or for
    telling a kernel's fault from the C++ autograd's."""
    global _through_operators
    before, _through_operators = _through_operators, True
    try:
        yield
    finally:
        _through_operators = before


DIFFERENTIABLE = ("gather_conv", "window_conv", "modulated_layer_norm")  # what :func:`differentiable` serves


def _operator(name: str, backend: str) -> Callable:
    if name not in DIFFERENTIABLE:
        raise ValueError(f"differentiable({name!r}): expected one of {', '.join(DIFFERENTIABLE)}")
    operator = getattr(torch.ops.infdiff, name)
    return lambda *args: operator(*args, backend)


@functools.lru_cache(maxsize=None)
def _eager(name: str, backend: str) -> Callable:
    operator = _operator(name, backend)  # checks the name
    return getattr(kernels(backend), f"{name}_autograd", None) or operator


@torch.library.custom_op("infdiff::gather_conv", mutates_args=())
def gather_conv(
    values: torch.Tensor,
    weight: torch.Tensor,
    table: torch.Tensor,
    scale: Optional[torch.Tensor],
    flip: bool,
    backend: str,
) -> torch.Tensor:
    """``out[p] = s[p] Σ_j weight[:, j] * values[T[j, p]]`` for values ``(M, C)``, weight ``(C, K)``, table
    ``(K, M)`` and an optional row scale ``s`` ``(M,)``; with ``flip``, the transpose (``T``'s rows reversed,
    ``s`` on the gathered rows).  ``s`` is float32 (float64 for float64 values) and is not differentiated."""
    return kernels(backend).gather_conv(values, weight, table, scale, flip)


@gather_conv.register_fake
def _(values, weight, table, scale, flip, backend):
    return values.new_empty((table.shape[1], values.shape[1]))


@torch.library.custom_op("infdiff::gather_conv_weight", mutates_args=())
def gather_conv_weight(
    grad: torch.Tensor,
    values: torch.Tensor,
    table: torch.Tensor,
    scale: Optional[torch.Tensor],
    flip: bool,
    backend: str,
) -> torch.Tensor:
    """``dw[c, j] = Σ_p s[p] grad[p, c] * values[T[j, p], c]``, ``(C, K)`` (with ``flip``, ``s`` on the values)."""
    return kernels(backend).gather_conv_weight(grad, values, table, scale, flip)


@gather_conv_weight.register_fake
def _(grad, values, table, scale, flip, backend):
    return values.new_empty((values.shape[1], table.shape[0]))


@torch.library.custom_op("infdiff::window_conv", mutates_args=())
def window_conv(
    values: torch.Tensor,
    weight: torch.Tensor,
    index: torch.Tensor,
    index_map: torch.Tensor,
    height: int,
    width: int,
    kernel_h: int,
    kernel_w: int,
    scale: Optional[torch.Tensor],
    flip: bool,
    backend: str,
) -> torch.Tensor:
    """:func:`gather_conv` with each neighbour looked up in the int32 index map ``(B, H*W)`` of the
    int32 pixel ids ``index`` ``(B, N)`` as it is needed: no ``(K, M)`` table exists, and autograd
    keeps only the values, the weight and those two small maps."""
    return kernels(backend).window_conv(
        values, weight, index, index_map, height, width, kernel_h, kernel_w, scale, flip
    )


@window_conv.register_fake
def _(values, weight, index, index_map, height, width, kernel_h, kernel_w, scale, flip, backend):
    return values.new_empty((index.numel(), values.shape[1]))


@torch.library.custom_op("infdiff::window_conv_weight", mutates_args=())
def window_conv_weight(
    grad: torch.Tensor,
    values: torch.Tensor,
    index: torch.Tensor,
    index_map: torch.Tensor,
    height: int,
    width: int,
    kernel_h: int,
    kernel_w: int,
    scale: Optional[torch.Tensor],
    flip: bool,
    backend: str,
) -> torch.Tensor:
    """:func:`gather_conv_weight` with the neighbours of :func:`window_conv`, ``(C, kh*kw)``."""
    return kernels(backend).window_conv_weight(
        grad, values, index, index_map, height, width, kernel_h, kernel_w, scale, flip
    )


@window_conv_weight.register_fake
def _(grad, values, index, index_map, height, width, kernel_h, kernel_w, scale, flip, backend):
    return values.new_empty((values.shape[1], kernel_h * kernel_w))


_SAVED = object()  # marks, in ``ctx.neighbours``, an argument kept by ``save_for_backward``


def _register_conv_autograd(conv, conv_weight):
    """Autograd of a convolution ``conv(values, weight, *neighbours, scale, flip, backend)`` whose
    weight gradient is ``conv_weight(grad, values, *neighbours, scale, flip, backend)``.

    The neighbour relation is symmetric (``q = p + o`` iff ``p = q - o``), and the row scale ``s``
    sits on its ``p`` side, ``y[p] = s[p] Σ_o w_o x[p + o]``.  So the gradient in the values is the
    same convolution with the relation flipped, ``∂L/∂x[q] = Σ_o w_o s[q - o] g[q - o]``, and the
    gradient in the weight is ``∂L/∂w_o = Σ_p s[p] g[p] x[p + o]``: both take ``s`` as given, and
    nothing ``(M, K, C)`` is stored.  The scale is a constant (the normaliser's inverse).
    """

    def setup_context(ctx, inputs, output):
        values, weight, *neighbours, flip, backend = inputs
        tensors = [arg for arg in neighbours if isinstance(arg, torch.Tensor)]
        ctx.save_for_backward(values, weight, *tensors)
        ctx.neighbours = [_SAVED if isinstance(arg, torch.Tensor) else arg for arg in neighbours]
        ctx.flip, ctx.backend = flip, backend

    def backward(ctx, grad):
        if ctx.needs_input_grad[-3]:
            raise RuntimeError("the sparse convolutions' row scale is not differentiable; pass it detached")
        values, weight, *tensors = ctx.saved_tensors
        given = iter(tensors)
        neighbours = [next(given) if arg is _SAVED else arg for arg in ctx.neighbours]
        grad = grad.contiguous()
        grad_values = grad_weight = None
        if ctx.needs_input_grad[0]:
            grad_values = conv(grad, weight, *neighbours, not ctx.flip, ctx.backend)
        if ctx.needs_input_grad[1]:
            grad_weight = conv_weight(grad, values, *neighbours, ctx.flip, ctx.backend)
        return (grad_values, grad_weight, *[None] * (len(neighbours) + 2))

    conv.register_autograd(backward, setup_context=setup_context)


_register_conv_autograd(gather_conv, gather_conv_weight)
_register_conv_autograd(window_conv, window_conv_weight)


@torch.library.custom_op("infdiff::neighbour_table", mutates_args=())
def neighbour_table(
    index: torch.Tensor, index_map: torch.Tensor, height: int, width: int, kernel_h: int, kernel_w: int, backend: str
) -> torch.Tensor:
    """``(kh*kw, B*N)`` rows of neighbours in the flattened values (``B*N`` where absent)."""
    return kernels(backend).neighbour_table(index, index_map, height, width, kernel_h, kernel_w)


@neighbour_table.register_fake
def _(index, index_map, height, width, kernel_h, kernel_w, backend):
    points = index.shape[0] * index.shape[1]
    return index.new_empty((kernel_h * kernel_w, points), dtype=torch.int32 if points < 2**31 - 1 else torch.long)


@torch.library.custom_op("infdiff::knn_window", mutates_args=())
def knn_window(
    index_map: torch.Tensor,
    coords: torch.Tensor,
    query: torch.Tensor,
    base: torch.Tensor,
    height: int,
    width: int,
    radius: int,
    k: int,
    backend: str,
) -> List[torch.Tensor]:
    """``[dist² (B, G, k), ids (B, G, k)]`` of the ``k`` present pixels nearest each query, nearest first."""
    return list(kernels(backend).knn_window(index_map, coords, query, base, height, width, radius, k))


@knn_window.register_fake
def _(index_map, coords, query, base, height, width, radius, k, backend):
    shape = (index_map.shape[0], query.shape[0], k)
    return [query.new_empty(shape, dtype=torch.float32), base.new_empty(shape, dtype=torch.long)]
