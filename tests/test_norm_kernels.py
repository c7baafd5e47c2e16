"""The modulated layer norm (``infdiff::modulated_layer_norm``): the compiled CPU kernel against the
reference and against PyTorch's own layer norm and ``addcmul``, both gradients, ``gradcheck`` in
float64, ``opcheck``, awkward shapes, bad inputs, and the sparse block that runs it."""

import pytest
import torch
from torch.nn import functional as F

from infdiff.nn.sparse_block import SparseResBlock
from infdiff.ops import SparseImage, uniform_subset
from infdiff.ops import reference_kernels
from infdiff.ops.backends import kernels
from infdiff.ops.modulated_norm import (
    modulated_layer_norm,
    modulated_layer_norm_backward_op,
    modulated_layer_norm_op,
)
from test_kernels import assert_close_to_size, cpp_available

pytestmark = pytest.mark.skipif(not cpp_available(), reason="the C++ kernels do not build here")

SHAPES = {
    "points": (3, 50, 64),
    "one row": (2, 1, 16),
    "one channel": (2, 5, 1),
    "wide, not a multiple of 32": (2, 7, 300),
    "no rows": (2, 0, 8),
    "more rows than the GPU's 256-row chunk": (2, 600, 24),
}


def inputs(shape, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    batch, _, channels = shape
    x = 3 * torch.randn(shape, generator=g, dtype=dtype) + 1  # off-centre, not unit scale
    scale = torch.randn(batch, channels, generator=g, dtype=dtype)
    shift = torch.randn(batch, channels, generator=g, dtype=dtype)
    return x, scale, shift


def composed(x, scale, shift, eps=1e-5):
    """The same map from PyTorch's operators."""
    return torch.addcmul(shift[:, None], F.layer_norm(x, x.shape[-1:], eps=eps), scale[:, None])


def run(fn, x, scale, shift, seed=1):
    leaves = [t.clone().requires_grad_(True) for t in (x, scale, shift)]
    y = fn(*leaves)
    y.backward(torch.randn(y.shape, generator=torch.Generator().manual_seed(seed)).to(y))  # one draw for any dtype
    return [y.detach()] + [leaf.grad for leaf in leaves]


@pytest.mark.parametrize("shape", list(SHAPES.values()), ids=list(SHAPES))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("backend", ["cpp", "torch"])
def test_the_output_and_all_three_gradients_match_pytorchs_layer_norm(shape, dtype, backend):
    x, scale, shift = inputs(shape, dtype)
    tolerance = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-12)
    expected = run(composed, x, scale, shift)
    ours = run(lambda *a: modulated_layer_norm(*a, backend=backend), x, scale, shift)
    for got, want in zip(ours, expected):
        torch.testing.assert_close(got, want, **tolerance)


@pytest.mark.parametrize("shape", list(SHAPES.values()), ids=list(SHAPES))
@pytest.mark.parametrize("backend", ["cpp"])
def test_the_kernels_match_the_reference_operator_by_operator(shape, backend):
    x, scale, shift = inputs(shape, torch.float64)
    ours = modulated_layer_norm_op(x, scale, shift, 1e-5, backend)
    reference = reference_kernels.modulated_layer_norm(x, scale, shift, 1e-5)
    for got, want in zip(ours, reference):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    grad = torch.randn_like(x)
    _, mean, rstd = reference
    ours = modulated_layer_norm_backward_op(grad, x, scale, mean, rstd, backend)
    for got, want in zip(ours, reference_kernels.modulated_layer_norm_backward(grad, x, scale, mean, rstd)):
        torch.testing.assert_close(got, want, rtol=1e-11, atol=1e-11)


@pytest.mark.parametrize("backend", ["cpp", "torch"])
def test_gradcheck_in_float64(backend):
    x, scale, shift = (t.requires_grad_(True) for t in inputs((2, 6, 5), torch.float64))
    assert torch.autograd.gradcheck(lambda *a: modulated_layer_norm_op(*a, 1e-5, backend)[0], (x, scale, shift))


@pytest.mark.parametrize("backend", ["cpp", "torch"])
def test_both_operators_pass_opcheck(backend):
    x, scale, shift = (t.requires_grad_(True) for t in inputs((2, 6, 5)))
    torch.library.opcheck(modulated_layer_norm_op, (x, scale, shift, 1e-5, backend))
    _, mean, rstd = reference_kernels.modulated_layer_norm(x.detach(), scale.detach(), shift.detach(), 1e-5)
    args = (torch.randn_like(x), x.detach(), scale.detach(), mean, rstd, backend)
    torch.library.opcheck(modulated_layer_norm_backward_op, args)


def test_autograd_keeps_the_input_and_the_row_statistics_only():
    x, scale, shift = inputs((4, 256, 64))
    x.requires_grad_(True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        modulated_layer_norm(x, scale, shift, backend="cpp")
    assert sorted(tuple(t.shape) for t in saved) == sorted([(4, 256, 64), (4, 64), (1024,), (1024,)])


class RecordedOperators:
    """The ATen (and custom) operators dispatched inside the block, by name."""

    def __enter__(self):
        from torch.utils._python_dispatch import TorchDispatchMode

        names = self.names = []

        class Record(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                names.append(str(func.overloadpacket))
                return func(*args, **(kwargs or {}))

        self.mode = Record()
        self.mode.__enter__()
        return self

    def __exit__(self, *exc):
        self.mode.__exit__(*exc)

    def without(self, name):
        return [n for n in self.names if n != name]


def test_backward_fills_no_gradient_for_the_row_statistics():
    """The statistics are not differentiable: backward runs the one backward operator, with no zero-filled
    gradients for them (two launches per call on a GPU)."""
    x, scale, shift = (t.requires_grad_(True) for t in inputs((2, 8, 16)))
    y, _, _ = modulated_layer_norm_op(x, scale, shift, 1e-5, "cpp")
    grad = torch.randn_like(y)
    with RecordedOperators() as record:
        y.backward(grad)
    assert record.names.count("infdiff.modulated_layer_norm_backward") == 1
    assert not [name for name in record.names if "zero" in name or "fill" in name], record.names


def test_the_eager_autograd_runs_the_backward_kernel_and_nothing_else():
    """The C++ autograd of eager calls (``csrc/autograd_ops.h``) launches what the backward kernel does by
    itself, and beyond it only the leaves' gradient accumulation (``detach``): no gradient is zero-filled."""
    x, scale, shift = (t.requires_grad_(True) for t in inputs((2, 8, 16)))
    compiled = kernels("cpp")
    y, mean, rstd = compiled.modulated_layer_norm_autograd(x, scale, shift, 1e-5)
    grad = torch.randn_like(y)
    with RecordedOperators() as through_autograd:
        y.backward(grad)
    with RecordedOperators() as by_itself:
        expected = compiled.modulated_layer_norm_backward(grad, x.detach(), scale.detach(), mean, rstd)
    assert through_autograd.without("aten.detach") == by_itself.without("aten.detach")
    for leaf, gradient in zip((x, scale, shift), expected):
        assert torch.equal(leaf.grad, gradient)


def test_any_leading_shape_and_a_shared_scale_broadcast_per_sample():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 3, 4, 8, generator=g)
    scale, shift = torch.randn(1, 8, generator=g), torch.randn(2, 8, generator=g)
    expected = torch.addcmul(shift[:, None, None], F.layer_norm(x, (8,)), scale[:, None, None])
    torch.testing.assert_close(modulated_layer_norm(x, scale, shift, backend="cpp"), expected)


@pytest.mark.parametrize(
    "scale_shape, message", [((2, 7), r"scale must be \(2, 8\)"), ((3, 8), r"scale must be \(2, 8\)")]
)
def test_a_misshaped_scale_is_refused_with_the_expected_shape(scale_shape, message):
    with pytest.raises(ValueError, match=message):
        modulated_layer_norm(torch.randn(2, 5, 8), torch.randn(scale_shape), torch.randn(2, 8), backend="cpp")


def test_the_kernel_refuses_wrong_inputs_in_one_line():
    x, scale, shift = inputs((2, 4, 8))
    with pytest.raises(RuntimeError, match="share a dtype"):
        modulated_layer_norm_op(x, scale.double(), shift, 1e-5, "cpp")
    with pytest.raises(RuntimeError, match=r"scale must be \(B, C\)"):
        modulated_layer_norm_op(x, scale[:, :4], shift, 1e-5, "cpp")


@pytest.mark.parametrize("sparse", [True, False])
def test_a_sparse_block_computes_the_same_with_the_kernel_and_with_pytorch(sparse):
    torch.manual_seed(0)
    blocks = {b: SparseResBlock(16, 5, 16, time_dim=8, z_dim=4, backend=b) for b in ("cpp", "torch")}
    blocks["torch"].load_state_dict(blocks["cpp"].state_dict())
    g = torch.Generator().manual_seed(4)
    features = torch.randn(2, 16, 16, 16, generator=g)  # (B, C, H, W)
    t_emb, z = torch.randn(2, 8, generator=g), torch.randn(2, 4, generator=g)
    if sparse:
        field = SparseImage.from_dense(features, uniform_subset(2, 16, 64, generator=g))
    else:
        field = features.permute(0, 2, 3, 1)  # the dense path's (B, H, W, C)
    results = {}
    for name, block in blocks.items():
        out = block(field, t_emb, z)
        values = out.values if sparse else out
        values.square().sum().backward()
        results[name] = [values.detach()] + [p.grad for p in block.parameters()]
    for ours, expected in zip(results["cpp"], results["torch"]):
        # float32 sums in another order: a weight gradient over every pixel differs by ~1e-6 of its size
        # (1.2e-5 at an entry near 0 on a 16-core AVX-512 machine)
        assert_close_to_size(ours, expected, 1e-5)
