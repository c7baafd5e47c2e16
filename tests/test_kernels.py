"""The compiled CPU kernels (``csrc/``) against the PyTorch reference, operator by operator.

Every case runs both backends, with both neighbour lookups (a stored table, the index map), on
the same inputs: outputs, both gradients, ``gradcheck`` in float64, ``torch.library.opcheck``, and
the awkward shapes (no points, one point, every point, non-square grids and kernels, batch items
holding different pixels).
"""

import subprocess
import sys

import pytest
import torch

from infdiff.ops import SparseImage, knn_grid_search, sparse_depthwise_conv
from infdiff.ops import backends
from infdiff.ops.extension import HEADERS, SOURCE_DIR, SOURCES, ExtensionUnavailable, build_key, load_kernels
from infdiff.ops.sparse_conv import neighbour_table, window_counts


def cpp_available():
    try:
        load_kernels("cpu")
        return True
    except ExtensionUnavailable:
        return False


pytestmark = pytest.mark.skipif(not cpp_available(), reason="the C++ kernels do not build here")


def sparse_image(batch, size, points, channels=5, seed=0, dtype=torch.float32, clustered=False):
    """Random pixels per batch item (the last item's packed into the top rows when ``clustered``)."""
    g = torch.Generator().manual_seed(seed)
    h, w = size
    index = torch.stack([torch.randperm(h * w, generator=g)[:points] for _ in range(batch)])
    if clustered:
        index[-1] = torch.arange(points)
    values = torch.randn(batch, points, channels, generator=g, dtype=dtype)
    return SparseImage(values, index, size)


CASES = {
    "square quarter": dict(batch=2, size=(16, 16), points=64),
    "non-square": dict(batch=3, size=(12, 20), points=100),
    "every pixel": dict(batch=2, size=(9, 7), points=63),
    "one point": dict(batch=2, size=(8, 8), points=1),
    "different occupancies": dict(batch=2, size=(16, 12), points=40, clustered=True),
}


def assert_close_to_size(ours, expected, tolerance):
    """Within ``tolerance``, relative to the largest entry of ``expected`` (gradients sum many rounded terms,
    so an entry near zero may carry the rounding of the large ones)."""
    size = expected.abs().max().item() if expected.numel() else 1.0
    torch.testing.assert_close(ours.double(), expected.double(), rtol=tolerance, atol=tolerance * max(1.0, size))


def conv(sparse, weight, backend, neighbours="table"):
    values = sparse.values.clone().requires_grad_(True)
    kernel = weight.clone().requires_grad_(True)
    image = SparseImage(values, sparse.index, sparse.size)  # a fresh cache per backend
    out = sparse_depthwise_conv(image, kernel, (3, 3), backend=backend, neighbours=neighbours).values
    out.backward(torch.randn(out.shape, generator=torch.Generator().manual_seed(1)).to(out))
    return out.detach(), values.grad, kernel.grad


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("kernel_size", [(3, 3), (7, 7), (5, 3)])
@pytest.mark.parametrize("neighbours", ["table", "window"])
def test_the_convolution_and_both_gradients_match_the_reference(case, dtype, kernel_size, neighbours):
    sparse = sparse_image(**CASES[case], dtype=dtype)
    weight = torch.randn(sparse.channels, *kernel_size, dtype=dtype, generator=torch.Generator().manual_seed(2))
    tolerance = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-12)
    reference = conv(sparse, weight, "torch", "table")
    for backend in ("cpp", "torch"):
        for ours, expected in zip(conv(sparse, weight, backend, neighbours), reference):
            torch.testing.assert_close(ours, expected, **tolerance)


@pytest.mark.parametrize("case", list(CASES))
def test_the_normaliser_counts_the_present_pixels_of_each_window(case):
    sparse = sparse_image(**CASES[case])
    for kernel_size in [(3, 3), (7, 5), (11, 11)]:
        table = neighbour_table(sparse, kernel_size, "torch")
        expected = (table < sparse.batch * sparse.num_points).sum(0)
        assert torch.equal(window_counts(sparse, kernel_size), expected)


def saved_by_autograd(fn):
    """The shapes autograd saves while ``fn`` runs."""
    shapes = []

    def pack(t):
        shapes.append(tuple(t.shape))
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return shapes


@pytest.mark.parametrize("backend", ["cpp", "torch"])
def test_the_window_lookup_saves_nothing_per_point_and_tap(backend):
    sparse = sparse_image(batch=2, size=(16, 16), points=100, channels=4)
    values = sparse.values.clone().requires_grad_(True)
    weight = torch.randn(4, 7, 7, requires_grad=True)

    def run(neighbours):
        image = SparseImage(values, sparse.index, sparse.size)
        return saved_by_autograd(lambda: sparse_depthwise_conv(image, weight, backend=backend, neighbours=neighbours))

    assert (49, 200) in run("table")
    window = set(run("window"))
    assert {(200, 4), (4, 49), (2, 256)} <= window  # values, weight, index map
    assert window <= {(200, 4), (4, 49), (2, 256), (2, 100), (200,)}  # and the ids, the normaliser's inverse


def test_an_unknown_neighbour_lookup_is_refused_with_a_suggestion():
    with pytest.raises(ValueError, match=r"unknown neighbour lookup 'windows'.*did you mean 'window'"):
        sparse_depthwise_conv(sparse_image(1, (4, 4), 4), torch.randn(5, 3, 3), neighbours="windows")


@pytest.mark.parametrize("backend", ["cpp", "torch"])
@pytest.mark.parametrize("neighbours", ["table", "window"])
def test_no_points_give_empty_outputs_and_gradients(neighbours, backend):
    weight = torch.randn(4, 3, 3, requires_grad=True)
    sparse = SparseImage(torch.zeros(2, 0, 4, requires_grad=True), torch.zeros(2, 0, dtype=torch.long), (5, 5))
    out = sparse_depthwise_conv(sparse, weight, backend=backend, neighbours=neighbours).values
    assert out.shape == (2, 0, 4)
    out.sum().backward()
    assert torch.equal(weight.grad, torch.zeros(4, 3, 3))


def row_scale(points, dtype=torch.float32):
    return torch.rand(points, dtype=dtype, generator=torch.Generator().manual_seed(4)) + 0.5


@pytest.mark.parametrize("backend", ["cpp", "torch"])
def test_gradcheck_in_float64(backend):
    sparse = sparse_image(batch=2, size=(6, 5), points=12, channels=3, dtype=torch.float64)
    table = neighbour_table(sparse, (3, 3), backend)
    values = sparse.values.reshape(-1, 3).clone().requires_grad_(True)
    weight = torch.randn(3, 9, dtype=torch.float64, requires_grad=True)
    index, index_map = sparse.index.int(), sparse.index_map().int()
    for flip in (False, True):
        for scale in (None, row_scale(24, torch.float64)):
            assert torch.autograd.gradcheck(
                lambda v, w: backends.gather_conv(v, w, table, scale, flip, backend), (values, weight)
            )
            assert torch.autograd.gradcheck(
                lambda v, w: backends.window_conv(v, w, index, index_map, 6, 5, 3, 3, scale, flip, backend),
                (values, weight),
            )


@pytest.mark.parametrize("backend", ["cpp", "torch"])
@pytest.mark.parametrize("scaled", [False, True])
def test_every_operator_passes_opcheck(backend, scaled):
    sparse = sparse_image(batch=2, size=(8, 6), points=20, channels=4)
    h, w = sparse.size
    table = backends.neighbour_table(sparse.index, sparse.index_map(), h, w, 3, 3, backend)
    values = sparse.values.reshape(-1, 4).clone().requires_grad_(True)
    weight = torch.randn(4, 9, requires_grad=True)
    scale = row_scale(40) if scaled else None
    torch.library.opcheck(backends.gather_conv, (values, weight, table, scale, False, backend))
    torch.library.opcheck(backends.gather_conv_weight, (values.detach(), values.detach(), table, scale, True, backend))
    torch.library.opcheck(backends.neighbour_table, (sparse.index, sparse.index_map(), h, w, 3, 3, backend))
    window = (sparse.index.int(), sparse.index_map().int(), h, w, 3, 3)
    torch.library.opcheck(backends.window_conv, (values, weight, *window, scale, False, backend))
    torch.library.opcheck(
        backends.window_conv_weight, (values.detach(), values.detach(), *window, scale, True, backend)
    )
    query = torch.rand(6, 2)
    base = (query * torch.tensor([h, w]) - 0.5).round().long()
    torch.library.opcheck(backends.knn_window, (sparse.index_map(), sparse.coords(), query, base, h, w, 1, 3, backend))


KNN_CASES = [  # size, points, grid, k, radius
    ((32, 32), 256, 8, 3, None),  # the window proves almost every cell
    ((32, 32), 256, 8, 3, 1),  # a narrow window: many cells scan every point
    ((24, 40), 200, (6, 10), 4, None),  # non-square
    ((16, 16), 256, 4, 3, None),  # every pixel: equidistant ties everywhere
    ((16, 16), 20, 8, 12, 1),  # k larger than the window holds: all exact scans
    ((16, 16), 5, 4, 5, None),  # k = N
]


@pytest.mark.parametrize("size, points, grid, k, radius", KNN_CASES)
def test_the_knn_search_returns_the_reference_neighbours_and_distances(size, points, grid, k, radius):
    sparse = sparse_image(batch=3, size=size, points=points, clustered=True)
    ours = knn_grid_search(sparse, grid, k, window_radius=radius, backend="cpp")
    reference = knn_grid_search(SparseImage(sparse.values, sparse.index, size), grid, k, radius, backend="torch")
    assert torch.equal(ours[1], reference[1])
    assert torch.equal(ours[0], reference[0])


def test_auto_falls_back_to_the_reference_with_one_line_when_the_build_fails(capsys):
    def broken(kind):
        raise ExtensionUnavailable("building the cpu kernels failed: no compiler")

    working = backends.BACKENDS.unregister("cpp")
    backends.BACKENDS.register("cpp", backends.Backend("unbuildable", ("cpu",), lambda: broken("cpu")))
    backends.forget_resolved()
    try:
        assert backends.resolve_backend("auto", "cpu") == "torch"
        assert capsys.readouterr().err == (
            "infdiff: building the cpu kernels failed: no compiler; using the PyTorch reference kernels "
            "(model.backend=torch)\n"
        )
        with pytest.raises(RuntimeError, match=r"model.backend='cpp': building the cpu kernels failed: no compiler"):
            backends.resolve_backend("cpp", "cpu")
    finally:
        backends.BACKENDS.unregister("cpp")
        backends.BACKENDS.register("cpp", working)
        backends.forget_resolved()


def test_the_window_kernels_refuse_wrong_inputs_in_one_line():
    sparse = sparse_image(batch=2, size=(6, 6), points=10, channels=3)
    values, weight = sparse.values.reshape(-1, 3), torch.randn(3, 9)
    index, index_map = sparse.index.int(), sparse.index_map().int()
    with pytest.raises(RuntimeError, match="index and index_map must be int32"):
        backends.window_conv(values, weight, sparse.index, index_map, 6, 6, 3, 3, None, False, "cpp")
    with pytest.raises(RuntimeError, match="kernel sizes must be odd, got 4x3"):
        backends.window_conv(values, torch.randn(3, 12), index, index_map, 6, 6, 4, 3, None, False, "cpp")
    with pytest.raises(RuntimeError, match=r"weight must be \(C, kh\*kw\) = \(3, 25\)"):
        backends.window_conv(values, weight, index, index_map, 6, 6, 5, 5, None, False, "cpp")
    with pytest.raises(RuntimeError, match="index_map must have H\\*W = 35 columns"):
        backends.window_conv(values, weight, index, index_map, 5, 7, 3, 3, None, False, "cpp")
    with pytest.raises(RuntimeError, match=r"scale must hold one value per point \(20\), got \[19\]"):
        backends.window_conv(values, weight, index, index_map, 6, 6, 3, 3, row_scale(19), False, "cpp")
    with pytest.raises(RuntimeError, match="scale must be Float for Float values, got Double"):
        backends.window_conv(values, weight, index, index_map, 6, 6, 3, 3, row_scale(20, torch.float64), False, "cpp")


@pytest.mark.parametrize("backend", ["cpp", "torch"])
def test_the_row_scale_sits_on_the_p_side_of_the_relation_in_both_directions(backend):
    """``y[p] = s[p] Σ_o w_o x[p + o]`` and its transpose ``Σ_o w_o s[q - o] g[q - o]``: the scaled
    convolution equals the unscaled one followed (or, flipped, preceded) by the scale."""
    sparse = sparse_image(batch=2, size=(9, 7), points=30, channels=4, dtype=torch.float64)
    h, w = sparse.size
    values, weight = sparse.values.reshape(-1, 4), torch.randn(4, 9, dtype=torch.float64)
    scale = row_scale(60, torch.float64)
    table = backends.neighbour_table(sparse.index, sparse.index_map(), h, w, 3, 3, backend)
    window = (sparse.index.int(), sparse.index_map().int(), h, w, 3, 3)
    for conv, neighbours in ((backends.gather_conv, (table,)), (backends.window_conv, window)):
        plain = conv(values, weight, *neighbours, None, False, backend)
        torch.testing.assert_close(conv(values, weight, *neighbours, scale, False, backend), plain * scale[:, None])
        flipped = conv(values * scale[:, None], weight, *neighbours, None, True, backend)
        torch.testing.assert_close(conv(values, weight, *neighbours, scale, True, backend), flipped)
    grad = torch.randn(60, 4, dtype=torch.float64)
    for conv_weight, neighbours in ((backends.gather_conv_weight, (table,)), (backends.window_conv_weight, window)):
        expected = conv_weight(grad * scale[:, None], values, *neighbours, None, False, backend)
        torch.testing.assert_close(conv_weight(grad, values, *neighbours, scale, False, backend), expected)
        expected = conv_weight(grad, values * scale[:, None], *neighbours, None, True, backend)
        torch.testing.assert_close(conv_weight(grad, values, *neighbours, scale, True, backend), expected)


def test_a_row_scale_that_asks_for_a_gradient_is_refused():
    sparse = sparse_image(batch=1, size=(6, 6), points=10, channels=3)
    table = neighbour_table(sparse, (3, 3), "cpp")
    values = sparse.values.reshape(-1, 3).clone().requires_grad_(True)
    out = backends.gather_conv(values, torch.randn(3, 9), table, row_scale(10).requires_grad_(True), False, "cpp")
    with pytest.raises(RuntimeError, match="row scale is not differentiable"):
        out.sum().backward()


def test_a_backend_for_another_device_is_refused():
    with pytest.raises(ValueError, match=r"model.backend='cuda' runs on cuda tensors, not cpu"):
        backends.resolve_backend("cuda", "cpu")
    with pytest.raises(ValueError, match=r"unknown backend 'cppp'.*did you mean 'cpp'"):
        backends.resolve_backend("cppp", "cpu")


@pytest.mark.parametrize("neighbours", ["table", "window"])
def test_reduced_precision_inputs_are_computed_in_float_and_returned_in_their_dtype(neighbours):
    sparse = sparse_image(batch=2, size=(10, 10), points=30, channels=8)
    weight = torch.randn(8, 3, 3, generator=torch.Generator().manual_seed(3))
    for dtype in (torch.bfloat16, torch.float16):
        image = SparseImage(sparse.values.to(dtype), sparse.index, sparse.size)
        ours = sparse_depthwise_conv(image, weight, backend="cpp", neighbours=neighbours).values
        reference = sparse_depthwise_conv(
            SparseImage(sparse.values, sparse.index, sparse.size), weight, backend="torch"
        )
        assert ours.dtype == dtype
        torch.testing.assert_close(ours.float(), reference.values, rtol=2e-2, atol=2e-2)


def test_importing_and_building_a_model_compiles_nothing():
    code = (
        "import infdiff, infdiff.pipeline\n"
        "from infdiff.nn import sparse_autoencoder\n"
        "from infdiff.ops.extension import load_kernels\n"
        "sparse_autoencoder(channels=3, train_size=16, nf=8, time_dim=16, uno_res=8, z_dim=4,"
        " uno=dict(base_channels=8, channel_mults=(1,), attn_resolutions=(), num_groups=4))\n"
        "assert load_kernels.cache_info().currsize == 0\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_every_kernel_file_is_part_of_a_build_and_of_its_cache_key():
    # a header left out of HEADERS would let an edit of it load a stale cached build
    files = {path.name for path in SOURCE_DIR.iterdir()}
    assert files == set(HEADERS).union(*SOURCES.values())
    assert build_key("cpu") != build_key("cuda")


def test_only_the_bindings_parse_torch_extension_h():
    # <torch/extension.h> in a kernel file costs every nvcc compile ~70 s (tensor_api.h says why)
    parsing = sorted(p.name for p in SOURCE_DIR.iterdir() if "#include <torch/extension.h>" in p.read_text())
    assert parsing == ["bindings.cpp"]
