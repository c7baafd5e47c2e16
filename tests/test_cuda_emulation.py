"""csrc's CUDA kernels, run on the CPU by the emulated GPU of ``tests/cuda_emulation``, held to the reference.

CI has no GPU: here the ``.cu`` sources themselves (every index, tile and reduction; only the
launches are rewritten) run as the backend ``cuda_emulated`` through the same custom operators,
autograd and checks as the compiled CPU kernels (``test_kernels.py``, ``test_norm_kernels.py``),
in every dtype the GPU path takes.  The emulator's own probes come last: they show it does catch
a missing ``__syncthreads``, threads at different barriers, shuffles in partial warps and launch
configurations a GPU refuses.  ``tests/test_gpu.py`` runs the real thing where a GPU exists.
"""

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import test_eager_autograd
import test_kernels
import test_norm_kernels
from cuda_emulation import asan_environment, compiler_at_hand, load_emulated_kernels, load_probe_kernels
from infdiff.nn import SparseUNet
from infdiff.ops import SparseImage, backends, knn_grid_search, uniform_subset
from infdiff.ops.extension import ExtensionUnavailable
from infdiff.ops.modulated_norm import modulated_layer_norm
from test_kernels import CASES, KNN_CASES, assert_close_to_size, conv, sparse_image
from test_norm_kernels import SHAPES, composed, inputs, run

EMULATED = "cuda_emulated"
SANITIZED = os.environ.get("INFDIFF_EMULATION_SANITIZE") == "1"  # this file's run under AddressSanitizer


def emulation_builds():
    """Whether the emulated kernels build; where a compiler is at hand, sources it rejects fail the run
    here instead of skipping every test below."""
    try:
        load_emulated_kernels(SANITIZED)
        load_probe_kernels(SANITIZED)
        return True
    except ExtensionUnavailable:
        if not SANITIZED and compiler_at_hand():
            raise
        return False


pytestmark = pytest.mark.skipif(not emulation_builds(), reason="the emulated CUDA kernels do not build here")

# dtype: tolerance against the float64 reference (the half types: their rounding of outputs and gradients)
TOLERANCE = {torch.float32: 1e-5, torch.float64: 1e-12, torch.bfloat16: 2e-2, torch.float16: 4e-3}


@pytest.fixture(scope="module", autouse=True)
def emulated_backend():
    emulated = backends.Backend("csrc's CUDA kernels, emulated", ("cpu",), lambda: load_emulated_kernels(SANITIZED))
    backends.BACKENDS.register(EMULATED, emulated)
    backends.forget_resolved()
    load_emulated_kernels(SANITIZED).set_seed(0)
    yield
    backends.BACKENDS.unregister(EMULATED)
    backends.forget_resolved()


def assert_close(ours, expected, dtype):
    """Within the dtype's tolerance, relative to the largest entry (gradients sum many rounded terms)."""
    assert_close_to_size(ours, expected, TOLERANCE[dtype])


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("dtype", list(TOLERANCE), ids=str)
@pytest.mark.parametrize("kernel_size", [(3, 3), (7, 7), (5, 3), (11, 11)])
@pytest.mark.parametrize("neighbours", ["table", "window"])
@pytest.mark.parametrize("channels", [37, 64])  # odd: one channel per lane; even: aligned pairs
def test_the_convolution_and_both_gradients_match_the_reference(case, dtype, kernel_size, neighbours, channels):
    sparse = sparse_image(**CASES[case], channels=channels)
    weight = torch.randn(channels, *kernel_size, generator=torch.Generator().manual_seed(2))
    launches = load_emulated_kernels(SANITIZED).launches()
    ours = conv(SparseImage(sparse.values.to(dtype), sparse.index, sparse.size), weight.to(dtype), EMULATED, neighbours)
    assert load_emulated_kernels(SANITIZED).launches() > launches  # the emulated kernels ran, not a fallback
    exact = SparseImage(sparse.values.to(dtype).double(), sparse.index, sparse.size)
    for got, expected in zip(ours, conv(exact, weight.to(dtype).double(), "torch")):
        assert got.dtype == dtype
        assert_close(got, expected, dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("neighbours", ["table", "window"])
def test_a_weight_gradient_over_more_chunks_than_reducing_warps_sums_them_all(dtype, neighbours):
    """2,800 points make 11 chunks of 256 for the weight kernel, so the reducing warps wrap around (warp 0
    sums chunks 0 and 8) and the last chunk is partial."""
    sparse = sparse_image(batch=2, size=(48, 40), points=1400, channels=6)
    weight = torch.randn(6, 3, 5, generator=torch.Generator().manual_seed(4))
    ours = conv(SparseImage(sparse.values.to(dtype), sparse.index, sparse.size), weight.to(dtype), EMULATED, neighbours)
    exact = SparseImage(sparse.values.to(dtype).double(), sparse.index, sparse.size)
    expected = conv(exact, weight.to(dtype).double(), "torch")
    assert ours[2].shape == (6, 3, 5) and ours[2].dtype == dtype
    assert_close(ours[2], expected[2], dtype)


@pytest.mark.parametrize("case", list(CASES))
def test_the_neighbour_table_equals_the_reference_and_an_int64_table_gathers_alike(case):
    sparse = sparse_image(**CASES[case])
    h, w = sparse.size
    values = sparse.values.reshape(-1, sparse.channels)
    for kernel in ((3, 3), (7, 5), (11, 11)):
        args = (sparse.index, sparse.index_map(), h, w, *kernel)
        table = backends.neighbour_table(*args, EMULATED)
        assert torch.equal(table, backends.neighbour_table(*args, "torch"))
        weight = torch.randn(sparse.channels, math.prod(kernel))
        for flip in (False, True):
            narrow = backends.gather_conv(values, weight, table, None, flip, EMULATED)
            assert torch.equal(backends.gather_conv(values, weight, table.long(), None, flip, EMULATED), narrow)
            grad = torch.randn_like(narrow)
            assert torch.equal(
                backends.gather_conv_weight(grad, values, table.long(), None, flip, EMULATED),
                backends.gather_conv_weight(grad, values, table, None, flip, EMULATED),
            )


@pytest.mark.parametrize("dtype", list(TOLERANCE), ids=str)
def test_rows_that_do_not_start_pair_aligned_take_the_one_channel_path_with_the_same_result(dtype):
    sparse = sparse_image(batch=2, size=(12, 10), points=50, channels=8)
    table = backends.neighbour_table(sparse.index, sparse.index_map(), 12, 10, 5, 5, EMULATED)

    def pair_aligned_and_not(t):  # the same values, and a copy starting one element off an aligned pair
        t = t.to(dtype)
        return t, torch.empty(t.numel() + 1, dtype=dtype)[1:].view_as(t).copy_(t)

    values, shifted_values = pair_aligned_and_not(sparse.values.reshape(-1, 8))
    grad, shifted_grad = pair_aligned_and_not(torch.randn(100, 8))
    weight = torch.randn(8, 25).to(dtype)
    for flip in (False, True):
        expected = backends.gather_conv(values, weight, table, None, flip, EMULATED)
        assert torch.equal(backends.gather_conv(shifted_values, weight, table, None, flip, EMULATED), expected)
        expected = backends.gather_conv_weight(grad, values, table, None, flip, EMULATED)
        for g, v in ((shifted_grad, values), (grad, shifted_values)):
            assert torch.equal(backends.gather_conv_weight(g, v, table, None, flip, EMULATED), expected)


def test_the_row_scale_sits_on_the_p_side_of_the_relation_in_both_directions():
    test_kernels.test_the_row_scale_sits_on_the_p_side_of_the_relation_in_both_directions(EMULATED)


@pytest.mark.parametrize("scaled", [False, True])
def test_every_operator_passes_opcheck(scaled):
    test_kernels.test_every_operator_passes_opcheck(EMULATED, scaled)


@pytest.mark.parametrize("neighbours", ["table", "window"])
def test_no_points_give_empty_outputs_and_gradients(neighbours):
    test_kernels.test_no_points_give_empty_outputs_and_gradients(neighbours, EMULATED)


def test_gradcheck_in_float64():
    test_kernels.test_gradcheck_in_float64(EMULATED)


@pytest.mark.parametrize("name", ["gather_conv", "window_conv"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("scaled", [False, True])
def test_the_eager_convolutions_equal_the_operators_bit_for_bit(name, dtype, scaled):
    for flip in (False, True):
        test_eager_autograd.test_the_eager_convolutions_equal_the_operators_bit_for_bit(
            name, dtype, scaled, flip, EMULATED
        )


@pytest.mark.parametrize("name", ["gather_conv", "window_conv"])
def test_the_eager_convolutions_pass_gradcheck_and_refuse_what_the_operators_refuse(name):
    test_eager_autograd.test_the_eager_convolutions_pass_gradcheck_and_keep_what_the_operators_keep(name, EMULATED)
    test_eager_autograd.test_the_eager_convolutions_refuse_a_differentiable_scale_and_second_derivatives(name, EMULATED)


def test_the_eager_norm_equals_the_operator_bit_for_bit():
    test_eager_autograd.test_the_eager_norm_equals_the_operator_bit_for_bit_and_refuses_second_derivatives(EMULATED)


@pytest.mark.parametrize("size, points, grid, k, radius", KNN_CASES)
def test_the_knn_search_finds_the_reference_neighbours(size, points, grid, k, radius):
    sparse = sparse_image(batch=3, size=size, points=points, clustered=True)
    ours = knn_grid_search(sparse, grid, k, window_radius=radius, backend=EMULATED)
    reference = knn_grid_search(SparseImage(sparse.values, sparse.index, size), grid, k, radius, backend="torch")
    if all(side & (side - 1) == 0 for side in size):
        # the kernel divides by the side as PyTorch's CUDA division does (times the reciprocal), which is
        # exact for a power of two: the same distances, bit for bit, and so the same ties and the same pixels
        assert torch.equal(ours[0], reference[0]) and torch.equal(ours[1], reference[1])
    else:
        # PyTorch on the CPU divides exactly: pixel centres differ by up to an ulp (6e-8 below 1), squared
        # distances by up to 2 (|dy| + |dx|) 6e-8 < 5e-8 (offsets < 0.2 here), and a near-tie may pick another pixel
        torch.testing.assert_close(ours[0], reference[0], rtol=0, atol=5e-8)
        assert ((ours[1] >= 0) & (ours[1] < points)).all()


@pytest.mark.parametrize("shape", list(SHAPES.values()), ids=list(SHAPES))
@pytest.mark.parametrize("dtype", list(TOLERANCE), ids=str)
def test_the_modulated_layer_norm_and_its_gradients_match_pytorch(shape, dtype):
    x, scale, shift = (t.to(dtype) for t in inputs(shape))
    expected = run(composed, *(t.double() for t in (x, scale, shift)))
    ours = run(lambda *a: modulated_layer_norm(*a, backend=EMULATED), x, scale, shift)
    for got, want in zip(ours, expected):
        assert got.dtype == dtype
        assert_close(got, want, dtype)


@pytest.mark.parametrize("shape", list(SHAPES.values()), ids=list(SHAPES))
def test_the_norm_kernels_match_the_reference_operator_by_operator(shape):
    test_norm_kernels.test_the_kernels_match_the_reference_operator_by_operator(shape, EMULATED)


def test_the_norm_operators_pass_gradcheck_and_opcheck():
    test_norm_kernels.test_gradcheck_in_float64(EMULATED)
    test_norm_kernels.test_both_operators_pass_opcheck(EMULATED)


def test_a_decoder_computes_the_same_on_the_emulated_gpu_as_with_pytorch():
    """Every kernel at once, as a model calls them: kNN onto the grid, the sparse blocks' norms and convs, back."""
    torch.manual_seed(0)
    shape = dict(channels=3, train_size=16, nf=32, time_dim=16, z_dim=8, uno_res=8, uno_channels=16)
    uno = dict(base_channels=16, channel_mults=(1,), attn_resolutions=(), num_groups=4)
    decoders = {b: SparseUNet(**shape, uno=uno, backend=b).double() for b in (EMULATED, "torch")}
    decoders["torch"].load_state_dict(decoders[EMULATED].state_dict())
    g = torch.Generator().manual_seed(5)
    x = torch.randn(2, 3, 16, 16, generator=g, dtype=torch.float64)
    index = uniform_subset(2, 16, 64, generator=g)
    t, z = torch.tensor([3, 700]), torch.randn(2, 8, generator=g, dtype=torch.float64)
    results = {}
    for name, decoder in decoders.items():
        torch.manual_seed(1)  # the same dropout masks
        out = decoder(SparseImage.from_dense(x, index), t, z).values
        out.square().sum().backward()
        results[name] = [out.detach()] + [p.grad for p in decoder.parameters()]
    for ours, expected in zip(results[EMULATED], results["torch"]):
        torch.testing.assert_close(ours, expected, rtol=1e-9, atol=1e-9)


# The emulator's probes: what it must accept, and what it must refuse.


def test_shuffles_sum_a_warp_and_barriers_order_shared_memory():
    probes = load_probe_kernels(SANITIZED)
    assert torch.equal(probes.warp_sum(64, False), torch.full((64,), 496))
    expected = torch.tensor([b * 1000 + (t + 1) % 64 for b in range(3) for t in range(64)])
    for seed in range(3):
        probes.set_seed(seed)
        assert torch.equal(probes.neighbour_exchange(3, 64, True), expected)


def test_a_missing_syncthreads_is_caught_by_the_shuffled_thread_order():
    probes = load_probe_kernels(SANITIZED)
    expected = torch.tensor([b * 1000 + (t + 1) % 64 for b in range(3) for t in range(64)])
    for seed in range(3):
        probes.set_seed(seed)
        assert not torch.equal(probes.neighbour_exchange(3, 64, False), expected)


def test_shuffles_in_partial_warps_and_threads_at_different_barriers_are_errors_not_hangs():
    probes = load_probe_kernels(SANITIZED)
    with pytest.raises(RuntimeError, match=r"warp 1 with 16 of 32 lanes present"):
        probes.warp_sum(48, False)
    with pytest.raises(RuntimeError, match=r"warp 0 with 31 of 32 lanes present \(a partial warp, or lanes that"):
        probes.warp_sum(32, True)
    with pytest.raises(
        RuntimeError, match=r"deadlock in block \(0, 0, 0\): some threads wait at __syncthreads, others"
    ):
        probes.mixed_barriers()


@pytest.mark.parametrize(
    "grid, block, shared, message",
    [
        ((0, 1, 1), (32, 1, 1), 0, "invalid configuration argument"),
        ((1, 65536, 1), (32, 1, 1), 0, r"grid 1x65536x1 exceeds the limits"),
        ((1, 1, 1), (33, 32, 1), 0, "a block of 33x32x1 threads exceeds 1024"),
        ((1, 1, 1), (32, 1, 1), 49153, "49153 bytes of dynamic shared memory exceed 48 KiB"),
        ((2**32, 1, 1), (32, 1, 1), 0, "a launch dimension of 4294967296 does not fit dim3"),
    ],
)
def test_launch_configurations_a_gpu_refuses_are_refused(grid, block, shared, message):
    with pytest.raises(RuntimeError, match=message):
        load_probe_kernels(SANITIZED).launch_nothing(list(grid), list(block), shared)


# The same tests under AddressSanitizer and the alignment sanitizer: every access the kernels make must stay
# inside a tensor's memory, and every access of a channel pair must be as aligned as a GPU requires.
SANITIZED_SUBSET = (
    "convolution_and_both and (float32 or bfloat16) or pair_aligned or neighbour_table or knn or norm_kernels"
    " or decoder"
)


def sanitized(command):
    try:
        env = asan_environment()
    except ExtensionUnavailable as why:
        pytest.skip(str(why))
    env.update(INFDIFF_EMULATION_SANITIZE="1", PYTHONPATH=str(Path(__file__).parent))
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=1800)


@pytest.mark.skipif(SANITIZED, reason="this is the sanitized run")
def test_no_kernel_touches_memory_outside_its_tensors_under_addresssanitizer():
    pytest_command = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", __file__]
    run = sanitized(pytest_command + ["-k", SANITIZED_SUBSET])
    reported = "AddressSanitizer" in run.stderr or "runtime error" in run.stderr
    assert run.returncode == 0 and not reported, run.stdout[-3000:] + run.stderr[-6000:]
    assert " passed" in run.stdout and " skipped" not in run.stdout, run.stdout[-3000:]


@pytest.mark.skipif(SANITIZED, reason="this is the sanitized run")
def test_addresssanitizer_reports_a_kernel_reading_past_the_end_of_a_tensor():
    code = "import torch, cuda_emulation; cuda_emulation.load_probe_kernels(True).shifted_copy(torch.arange(64))"
    run = sanitized([sys.executable, "-c", code])
    assert run.returncode != 0
    assert "AddressSanitizer: heap-buffer-overflow" in run.stderr and "shifted_copy" in run.stderr, run.stderr[-3000:]


@pytest.mark.skipif(SANITIZED, reason="this is the sanitized run")
def test_the_alignment_sanitizer_reports_a_pair_access_off_its_alignment():
    code = (
        "import torch, cuda_emulation; print(cuda_emulation.load_probe_kernels(True).pair_copy(torch.arange(9.), {}))"
    )
    aligned = sanitized([sys.executable, "-c", code.format(0)])
    assert aligned.returncode == 0 and "tensor([0., 1., 2., 3., 4., 5., 6., 7.])" in aligned.stdout, aligned.stderr
    run = sanitized([sys.executable, "-c", code.format(1)])
    assert run.returncode != 0
    assert "misaligned address" in run.stderr and "FloatPair" in run.stderr, run.stderr[-3000:]
