"""The compiled operators' C++ autograd for eager calls (``csrc/autograd_ops.h``) against the
``torch.library`` operators' own autograd: the same outputs and gradients bit for bit (the same kernels
run), the same tensors kept for backward, ``gradcheck`` in float64, the same refusals, and
:func:`infdiff.ops.backends.differentiable` choosing between them.  ``test_cuda_emulation.py`` runs
these on the emulated CUDA kernels too."""

import contextlib

import pytest
import torch

from infdiff.nn import SparseUNet
from infdiff.ops import SparseImage, backends, uniform_subset
from infdiff.ops.modulated_norm import modulated_layer_norm_op
from test_kernels import cpp_available, row_scale, saved_by_autograd, sparse_image
from test_norm_kernels import inputs

pytestmark = pytest.mark.skipif(not cpp_available(), reason="the C++ kernels do not build here")


def conv_arguments(neighbours, dtype=torch.float32, kernel=(3, 5)):
    """Values ``(M, C)``, weight ``(C, K)`` and the neighbour arguments of ``gather_conv`` or ``window_conv``."""
    sparse = sparse_image(batch=2, size=(9, 7), points=30, channels=4, dtype=dtype)
    h, w = sparse.size
    values = sparse.values.reshape(-1, 4)
    weight = torch.randn(4, kernel[0] * kernel[1], dtype=dtype, generator=torch.Generator().manual_seed(5))
    if neighbours == "gather_conv":
        return values, weight, (backends.neighbour_table(sparse.index, sparse.index_map(), h, w, *kernel, "torch"),)
    return values, weight, (sparse.index.int(), sparse.index_map().int(), h, w, *kernel)


def through(fn, values, weight, grad):
    """Output and both gradients of ``fn(values, weight)`` for the output gradient ``grad``."""
    values, weight = values.clone().requires_grad_(True), weight.clone().requires_grad_(True)
    out = fn(values, weight)
    out.backward(grad)
    return out.detach(), values.grad, weight.grad


@pytest.mark.parametrize("name", ["gather_conv", "window_conv"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("scaled", [False, True])
@pytest.mark.parametrize("flip", [False, True])
def test_the_eager_convolutions_equal_the_operators_bit_for_bit(name, dtype, scaled, flip, backend="cpp"):
    values, weight, neighbours = conv_arguments(name, dtype)
    scale = row_scale(60, torch.float64 if dtype == torch.float64 else torch.float32) if scaled else None
    grad = torch.randn(values.shape, generator=torch.Generator().manual_seed(6)).to(dtype)
    operator = getattr(backends, name)
    expected = through(lambda v, w: operator(v, w, *neighbours, scale, flip, backend), values, weight, grad)
    eager = getattr(backends.kernels(backend), f"{name}_autograd")
    ours = through(lambda v, w: eager(v, w, *neighbours, scale, flip), values, weight, grad)
    for got, want in zip(ours, expected):
        assert torch.equal(got, want)


@pytest.mark.parametrize("name", ["gather_conv", "window_conv"])
def test_the_eager_convolutions_pass_gradcheck_and_keep_what_the_operators_keep(name, backend="cpp"):
    values, weight, neighbours = conv_arguments(name, torch.float64)
    values, weight = values.clone().requires_grad_(True), weight.clone().requires_grad_(True)
    eager = getattr(backends.kernels(backend), f"{name}_autograd")
    operator = getattr(backends, name)
    for flip in (False, True):
        for scale in (None, row_scale(60, torch.float64)):
            assert torch.autograd.gradcheck(lambda v, w: eager(v, w, *neighbours, scale, flip), (values, weight))
            kept = saved_by_autograd(lambda: eager(values, weight, *neighbours, scale, flip))
            by_operator = saved_by_autograd(lambda: operator(values, weight, *neighbours, scale, flip, backend))
            assert sorted(kept) == sorted(by_operator)


@pytest.mark.parametrize("name", ["gather_conv", "window_conv"])
def test_the_eager_convolutions_refuse_a_differentiable_scale_and_second_derivatives(name, backend="cpp"):
    values, weight, neighbours = conv_arguments(name)
    values = values.clone().requires_grad_(True)
    eager = getattr(backends.kernels(backend), f"{name}_autograd")
    out = eager(values, weight, *neighbours, row_scale(60).requires_grad_(True), False)
    with pytest.raises(RuntimeError, match="row scale is not differentiable; pass it detached"):
        out.sum().backward()
    out = eager(values, weight, *neighbours, row_scale(60), False)
    with pytest.raises(RuntimeError, match="second derivatives of infdiff's sparse convolutions are not implemented"):
        torch.autograd.grad(out.sum(), values, create_graph=True)


def test_the_eager_norm_equals_the_operator_bit_for_bit_and_refuses_second_derivatives(backend="cpp"):
    x, scale, shift = inputs((3, 50, 24))
    grad = torch.randn(x.shape, generator=torch.Generator().manual_seed(7))
    eager = backends.kernels(backend).modulated_layer_norm_autograd

    def run(fn):
        leaves = [t.clone().requires_grad_(True) for t in (x, scale, shift)]
        y, mean, rstd = fn(*leaves)
        assert not mean.requires_grad and not rstd.requires_grad
        y.backward(grad)
        return [y.detach(), mean, rstd] + [leaf.grad for leaf in leaves]

    for got, want in zip(run(lambda *a: eager(*a, 1e-5)), run(lambda *a: modulated_layer_norm_op(*a, 1e-5, backend))):
        assert torch.equal(got, want)
    leaves = [t.double().requires_grad_(True) for t in (x[:, :6, :5], scale[:, :5], shift[:, :5])]
    assert torch.autograd.gradcheck(lambda *a: eager(*a, 1e-5)[0], leaves)
    y = eager(*leaves, 1e-5)[0]
    with pytest.raises(RuntimeError, match="second derivatives of infdiff's modulated layer norm are not implemented"):
        torch.autograd.grad(y.sum(), leaves[0], create_graph=True)


def test_differentiable_gives_the_c_autograd_eagerly_and_the_operator_otherwise():
    compiled = backends.kernels("cpp")
    assert backends.differentiable("gather_conv", "cpp") is compiled.gather_conv_autograd
    assert backends.differentiable("modulated_layer_norm", "cpp") is compiled.modulated_layer_norm_autograd
    values, weight, (table,) = conv_arguments("gather_conv", torch.float64)
    reference = backends.differentiable("gather_conv", "torch")  # the reference kernels have no C++ autograd
    assert torch.equal(
        reference(values, weight, table, None, False), backends.gather_conv(values, weight, table, None, False, "torch")
    )

    traced = []

    def record(graph, example_inputs):
        traced.extend(str(node.target) for node in graph.graph.nodes if node.op == "call_function")
        return graph.forward

    compiled_conv = torch.compile(
        lambda v: backends.differentiable("gather_conv", "cpp")(v, weight, table, None, False),
        backend=record,
        fullgraph=True,
    )
    torch.testing.assert_close(compiled_conv(values), compiled.gather_conv(values, weight, table, None, False))
    # the operator, with its fake kernel, not the pybind function (which would break the graph)
    assert [target.split(".")[:2] for target in traced] == [["infdiff", "gather_conv"]]


def test_through_operators_switches_eager_calls_to_the_operators_for_the_block_only():
    compiled = backends.kernels("cpp").gather_conv_autograd
    with pytest.raises(KeyError):
        with backends.through_operators():
            assert backends.differentiable("gather_conv", "cpp") is not compiled
            raise KeyError("leaving the block by an error")
    assert backends.differentiable("gather_conv", "cpp") is compiled


def test_a_decoder_computes_the_same_through_either_autograd_bit_for_bit(device="cpu", backend="cpp"):
    """Every differentiable operator as a model calls them (the sparse blocks' norms and convs, both
    neighbour lookups), forward and backward, in the eager C++ autograd and in the operators' own
    (``test_gpu.py`` runs it with the CUDA kernels)."""
    shape = dict(channels=3, train_size=16, nf=16, time_dim=16, z_dim=8, uno_res=8, uno_channels=16)
    uno = dict(base_channels=16, channel_mults=(1,), attn_resolutions=(), num_groups=4)
    g = torch.Generator().manual_seed(5)
    x = torch.randn(2, 3, 16, 16, generator=g).to(device)
    index = uniform_subset(2, 16, 64, generator=g).to(device)
    t, z = torch.tensor([3, 700], device=device), torch.randn(2, 8, generator=g).to(device)
    for neighbours in ("table", "window"):
        torch.manual_seed(0)
        decoder = SparseUNet(**shape, uno=uno, backend=backend, neighbours=neighbours).to(device)
        results = []
        for through_operators in (False, True):
            torch.manual_seed(1)  # the same dropout masks
            decoder.zero_grad(set_to_none=True)
            with backends.through_operators() if through_operators else contextlib.nullcontext():
                out = decoder(SparseImage.from_dense(x, index), t, z).values
                out.square().sum().backward()
            results.append([out.detach()] + [p.grad for p in decoder.parameters()])
        for ours, expected in zip(*results):
            assert torch.equal(ours, expected)


def test_a_profile_names_the_eager_kernels_as_the_operators_they_stand_for():
    """``benchmarks/step_breakdown.py`` sums a step's time under the operators' names, on either path."""
    values, weight, neighbours = conv_arguments("window_conv")
    values, weight = values.clone().requires_grad_(True), weight.clone().requires_grad_(True)
    x, scale, shift = (t.requires_grad_(True) for t in inputs((2, 8, 4)))
    compiled = backends.kernels("cpp")
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profile:
        compiled.window_conv_autograd(values, weight, *neighbours, None, False).sum().backward()
        compiled.modulated_layer_norm_autograd(x, scale, shift, 1e-5)[0].sum().backward()
    counts = {e.key: e.count for e in profile.key_averages() if e.key.startswith("infdiff::")}
    assert counts == {
        "infdiff::window_conv": 2,  # the forward, and the flipped one of backward
        "infdiff::window_conv_weight": 1,
        "infdiff::modulated_layer_norm": 1,
        "infdiff::modulated_layer_norm_backward": 1,
    }


def test_differentiable_refuses_an_operator_it_does_not_serve_in_one_line():
    for name in ("gather_cnv", "neighbour_table"):
        with pytest.raises(ValueError, match=rf"differentiable\('{name}'\): expected one of gather_conv, window_conv"):
            backends.differentiable(name, "cpp")
        with pytest.raises(ValueError, match="expected one of"), backends.through_operators():
            backends.differentiable(name, "torch")
