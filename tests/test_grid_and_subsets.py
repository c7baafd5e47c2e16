import pytest
import torch

from infdiff.ops import (
    SparseImage,
    gather_pixels,
    grid_coords,
    halton_subset,
    index_to_coords,
    resized_kernel_size,
    draw_subset,
    uniform_subset,
    white_noise_scale,
)


def test_coordinates_are_cell_centred_row_major():
    coords = grid_coords((2, 4))
    torch.testing.assert_close(coords[0], torch.tensor([0.25, 0.125]))
    torch.testing.assert_close(coords[5], torch.tensor([0.75, 0.375]))
    torch.testing.assert_close(index_to_coords(torch.tensor([7]), (2, 4)), torch.tensor([[0.75, 0.875]]))


def test_resolution_helpers():
    assert resized_kernel_size(7, 1.0) == 7
    assert resized_kernel_size(7, 2.0) == 15
    assert resized_kernel_size(7, 0.25) == 3
    assert white_noise_scale(128, 64) == pytest.approx(2.0)
    assert white_noise_scale((64, 128), 64) == pytest.approx(2**0.5)
    with pytest.raises(ValueError):
        resized_kernel_size(4, 2.0)


@pytest.mark.parametrize("sampler", ["uniform", "halton"])
def test_subsets_are_distinct_sorted_and_in_range(sampler):
    g = torch.Generator().manual_seed(0)
    ids = draw_subset(sampler, 4, (16, 12), 48, generator=g)
    assert ids.shape == (4, 48)
    assert bool((ids[:, 1:] > ids[:, :-1]).all())
    assert int(ids.min()) >= 0 and int(ids.max()) < 16 * 12


def test_uniform_subset_is_uniform():
    g = torch.Generator().manual_seed(1)
    ids = uniform_subset(4000, 8, 16, generator=g)
    counts = torch.bincount(ids.flatten(), minlength=64).double()
    expected = 4000 * 16 / 64
    assert float((counts - expected).abs().max()) < 6 * expected**0.5


def test_halton_subset_is_more_even_than_uniform():
    """Count pixels per 4x4 block: a QMC design has a smaller spread of block counts."""
    g = torch.Generator().manual_seed(2)

    def block_spread(ids):
        rows, cols = ids // 32, ids % 32
        blocks = (rows // 4) * 8 + cols // 4
        counts = torch.stack([torch.bincount(b, minlength=64) for b in blocks]).double()
        return float(counts.std(1).mean())

    assert block_spread(halton_subset(16, 32, 256, generator=g)) < 0.7 * block_spread(
        uniform_subset(16, 32, 256, generator=g)
    )


def test_subset_errors():
    with pytest.raises(ValueError, match="cannot keep"):
        uniform_subset(1, 4, 17)
    with pytest.raises(ValueError, match="unknown pixel-subset design"):
        draw_subset("sobol", 1, 4, 2)


def test_sparse_image_round_trip():
    x = torch.randn(2, 3, 5, 6)
    ids = uniform_subset(2, (5, 6), 10)
    sparse = SparseImage.from_dense(x, ids)
    torch.testing.assert_close(sparse.values, gather_pixels(x, ids))
    dense = sparse.to_dense(fill=float("nan"))
    mask = sparse.mask().bool().expand_as(x)
    torch.testing.assert_close(dense[mask], x[mask])
    assert bool(dense[~mask].isnan().all())
    assert int(sparse.mask().sum()) == 20
    full = SparseImage.from_dense(x)
    torch.testing.assert_close(full.to_dense(), x)
    with pytest.raises(ValueError, match="index shape"):
        SparseImage(torch.zeros(2, 3, 1), torch.zeros(2, 4, dtype=torch.long), (4, 4))
