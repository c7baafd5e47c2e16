import pytest
import torch
import torch.nn.functional as F

from infdiff.ops import (
    SparseImage,
    grid_coords,
    interpolate_to_grid,
    knn_brute_force,
    knn_grid_search,
    sample_grid_at_points,
    uniform_subset,
)


def points_distance(sparse, ids, grid_size):
    coords = sparse.coords()
    query = grid_coords(grid_size).expand(sparse.batch, -1, -1)
    picked = torch.gather(coords, 1, ids.reshape(sparse.batch, -1, 1).expand(-1, -1, 2)).view(*ids.shape, 2)
    return (picked - query.unsqueeze(2)).square().sum(-1)


@pytest.mark.parametrize(
    "size,n,grid,k", [(64, 1024, 32, 3), (32, 32, 16, 3), (40, 1600, 20, 4), ((24, 36), 100, (12, 9), 3), (16, 5, 8, 5)]
)
def test_window_search_equals_brute_force(size, n, grid, k):
    g = torch.Generator().manual_seed(0)
    sparse = SparseImage.from_dense(
        torch.zeros(2, 1, *((size, size) if isinstance(size, int) else size)), uniform_subset(2, size, n, generator=g)
    )
    dist, ids = knn_grid_search(sparse, grid, k)
    ref_dist, _ = knn_brute_force(grid_coords(grid).expand(2, -1, -1), sparse.coords(), k)
    torch.testing.assert_close(dist, ref_dist)
    torch.testing.assert_close(points_distance(sparse, ids, grid), ref_dist)
    assert bool((ids[..., :-1] != ids[..., 1:]).all())


def test_equidistant_pixels_resolve_to_the_first_in_row_major_order():
    """On a full 8² grid every 4² cell centre sits at the corner shared by four pixels; k=3 of
    them tie.  Window search and brute force must both keep the first three in row-major order
    (a stable rule, so CPU and CUDA pick the same pixels; ``topk``'s tie order is unspecified)."""
    sparse = SparseImage.from_dense(torch.zeros(1, 1, 8, 8))
    dist, ids = knn_grid_search(sparse, 4, 3)
    ref_dist, ref_ids = knn_brute_force(grid_coords(4).unsqueeze(0), sparse.coords(), 3)
    assert torch.equal(dist, ref_dist) and torch.equal(ids, ref_ids)
    r, c = torch.meshgrid(torch.arange(4) * 2, torch.arange(4) * 2, indexing="ij")
    top_left = (r * 8 + c).reshape(1, -1, 1)
    assert torch.equal(ids, top_left + torch.tensor([0, 1, 8]))


def test_small_window_falls_back_exactly():
    g = torch.Generator().manual_seed(1)
    sparse = SparseImage.from_dense(torch.zeros(1, 1, 64, 64), uniform_subset(1, 64, 20, generator=g))
    dist, _ = knn_grid_search(sparse, 16, 3, window_radius=1)
    ref, _ = knn_brute_force(grid_coords(16).unsqueeze(0), sparse.coords(), 3)
    torch.testing.assert_close(dist, ref)


def test_interpolation_is_inverse_squared_distance_average():
    g = torch.Generator().manual_seed(2)
    sparse = SparseImage.from_dense(torch.randn(2, 3, 16, 16, generator=g), uniform_subset(2, 16, 64, generator=g))
    grid = interpolate_to_grid(sparse, 8, k=3)
    _, ids = knn_grid_search(sparse, 8, 3)
    weights = 1 / points_distance(sparse, ids, 8)
    weights = weights / weights.sum(-1, keepdim=True)
    values = torch.gather(sparse.values.unsqueeze(1).expand(-1, 64, -1, -1), 2, ids.unsqueeze(-1).expand(-1, -1, -1, 3))
    ref = (values * weights.unsqueeze(-1)).sum(2).transpose(1, 2).reshape(2, 3, 8, 8)
    torch.testing.assert_close(grid, ref, rtol=1e-4, atol=1e-4)


def test_constant_field_interpolates_to_constant():
    sparse = SparseImage.from_dense(torch.full((1, 2, 32, 32), 0.7), uniform_subset(1, 32, 100))
    torch.testing.assert_close(interpolate_to_grid(sparse, 16), torch.full((1, 2, 16, 16), 0.7))


def test_bilinear_sampling_matches_interpolate_at_pixel_centres():
    grid = torch.randn(2, 3, 8, 8)
    coords = grid_coords(32).expand(2, -1, -1)
    sampled = sample_grid_at_points(grid, coords).transpose(1, 2).reshape(2, 3, 32, 32)
    torch.testing.assert_close(sampled, F.interpolate(grid, size=32, mode="bilinear", align_corners=False))


def test_bilinear_sampling_is_exact_for_linear_functions():
    u = (torch.arange(8) + 0.5) / 8
    grid = (2 * u[:, None] + 3 * u[None, :]).view(1, 1, 8, 8)
    coords = torch.rand(1, 50, 2) * (7 / 8) + 1 / 16
    values = sample_grid_at_points(grid, coords)[0, :, 0]
    torch.testing.assert_close(values, 2 * coords[0, :, 0] + 3 * coords[0, :, 1])


def test_too_many_neighbours_is_an_error():
    sparse = SparseImage.from_dense(torch.zeros(1, 1, 4, 4), uniform_subset(1, 4, 2))
    with pytest.raises(ValueError, match="neighbours"):
        knn_grid_search(sparse, 2, 3)
