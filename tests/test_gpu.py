"""CUDA checks of the sparse operators and networks; skipped cleanly without a GPU."""

import pytest
import torch

from infdiff.nn import SparseUNet
from infdiff.ops import SparseImage, dense_depthwise_conv, interpolate_to_grid, sparse_depthwise_conv, uniform_subset

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def test_sparse_conv_on_cuda_matches_cpu():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 8, 32, 32, generator=g)
    index = uniform_subset(2, 32, 256, generator=g)
    weight = torch.randn(8, 7, 7, generator=g)
    cpu = sparse_depthwise_conv(SparseImage.from_dense(x, index), weight).values
    gpu = sparse_depthwise_conv(SparseImage.from_dense(x.cuda(), index.cuda()), weight.cuda()).values
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-4, atol=1e-4)
    full = SparseImage.from_dense(x.cuda())
    torch.testing.assert_close(
        sparse_depthwise_conv(full, weight.cuda()).to_dense(),
        dense_depthwise_conv(x.cuda(), weight.cuda()),
        rtol=1e-4,
        atol=1e-4,
    )


def test_knn_interpolation_on_cuda_matches_cpu():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 4, 64, 64, generator=g)
    index = uniform_subset(2, 64, 1024, generator=g)
    cpu = interpolate_to_grid(SparseImage.from_dense(x, index), 21)
    gpu = interpolate_to_grid(SparseImage.from_dense(x.cuda(), index.cuda()), 21)
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-4, atol=1e-4)


def test_decoder_sparse_and_dense_on_cuda_under_bf16_autocast():
    decoder = SparseUNet(
        channels=3,
        train_size=32,
        nf=32,
        time_dim=64,
        z_dim=16,
        uno_res=16,
        uno_channels=32,
        uno=dict(base_channels=32, channel_mults=(1, 2), attn_resolutions=(8,), num_groups=8),
    ).cuda()
    x = torch.randn(2, 3, 32, 32, device="cuda")
    t, z = torch.tensor([1, 500], device="cuda"), torch.randn(2, 16, device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        sparse = decoder(SparseImage.from_dense(x, uniform_subset(2, 32, 256, device="cuda")), t, z)
        dense = decoder(torch.randn(2, 3, 64, 64, device="cuda"), t, z)
    sparse.values.float().square().mean().backward()
    assert torch.isfinite(sparse.values).all() and dense.shape == (2, 3, 64, 64)
