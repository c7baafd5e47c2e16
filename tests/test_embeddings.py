"""Sinusoidal time embeddings and FiLM conditioning."""

import math

import pytest
import torch
from torch import nn

from infdiff.nn.embeddings import TimeEmbedding, timestep_embedding
from infdiff.nn.film import FiLM, folded_affines


def test_timestep_embedding_shape_and_odd_padding():
    t = torch.tensor([0.0, 1.5, 10.0, 999.0])
    assert timestep_embedding(t, 16).shape == (4, 16)
    odd = timestep_embedding(t, 7)
    assert odd.shape == (4, 7)
    assert torch.all(odd[:, -1] == 0)
    assert timestep_embedding(torch.zeros(2, 3), 8).shape == (2, 3, 8)


def test_timestep_embedding_zero_is_cos_one_sin_zero():
    e = timestep_embedding(torch.zeros(3), 10)
    assert torch.equal(e[:, :5], torch.ones(3, 5))
    assert torch.equal(e[:, 5:], torch.zeros(3, 5))


def test_timestep_embedding_matches_formula():
    dim, max_period, t = 8, 10000.0, 37.25
    half = dim // 2
    expected = [math.cos(t * max_period ** (-i / half)) for i in range(half)]
    expected += [math.sin(t * max_period ** (-i / half)) for i in range(half)]
    got = timestep_embedding(torch.tensor([t], dtype=torch.float64), dim, max_period)
    assert torch.allclose(got[0], torch.tensor(expected, dtype=torch.float64), atol=1e-12)


def test_timestep_embedding_distinguishes_times():
    e = timestep_embedding(torch.tensor([1.0, 2.0, 500.0]), 32)
    assert not torch.allclose(e[0], e[1])
    assert not torch.allclose(e[1], e[2])


def test_timestep_embedding_rejects_tiny_dim():
    with pytest.raises(ValueError, match="dim >= 2"):
        timestep_embedding(torch.zeros(2), 1)


def test_time_embedding_module():
    emb = TimeEmbedding(16, 24)
    out = emb(torch.tensor([3.0, 700.0]))
    assert out.shape == (2, 24) and emb.out_dim == 24
    out.sum().backward()
    assert all(p.grad is not None for p in emb.parameters())


def _zero_last_linear(film: FiLM) -> None:
    for mlp in (film.time, film.latent):
        torch.nn.init.zeros_(mlp[-1].weight)
        torch.nn.init.zeros_(mlp[-1].bias)


@pytest.mark.parametrize(
    "shape, channels_last",
    [((2, 5, 6), True), ((2, 3, 4, 6), True), ((2, 6, 3, 4), False)],
)
def test_film_is_identity_when_conditioning_outputs_zero(shape, channels_last):
    film = FiLM(6, time_dim=4, z_dim=3, channels_last=channels_last)
    _zero_last_linear(film)
    h = torch.randn(shape)
    out = film(h, torch.randn(2, 4), torch.randn(2, 3))
    assert torch.equal(out, h)


@pytest.mark.parametrize("shape", [(2, 5, 6), (2, 3, 4, 6)])
def test_film_broadcasts_per_sample_and_channel(shape):
    film = FiLM(6, time_dim=4, z_dim=3)
    h, t_emb, z = torch.randn(shape), torch.randn(2, 4), torch.randn(2, 3)
    out = film(h, t_emb, z)
    scale, shift = film.time(t_emb).chunk(2, dim=-1)
    z_scale = film.latent(z)
    flat_h, flat_out = h.reshape(2, -1, 6), out.reshape(2, -1, 6)
    for b in range(2):
        expected = (flat_h[b] * (1 + scale[b]) + shift[b]) * (1 + z_scale[b])
        assert torch.allclose(flat_out[b], expected, atol=1e-6)


def test_film_channels_first_matches_channels_last():
    last = FiLM(6, time_dim=4, z_dim=3)
    first = FiLM(6, time_dim=4, z_dim=3, channels_last=False)
    first.load_state_dict(last.state_dict())
    h, t_emb, z = torch.randn(2, 3, 4, 6), torch.randn(2, 4), torch.randn(2, 3)
    expected = last(h, t_emb, z).permute(0, 3, 1, 2)
    assert torch.allclose(first(h.permute(0, 3, 1, 2), t_emb, z), expected, atol=1e-6)


def test_film_partial_and_missing_conditioning():
    h = torch.randn(2, 5, 6)
    time_only = FiLM(6, time_dim=4)
    assert time_only(h, torch.randn(2, 4)).shape == h.shape
    assert torch.equal(FiLM(6)(h), h)
    with pytest.raises(ValueError, match="t_emb"):
        time_only(h)
    with pytest.raises(ValueError, match="z"):
        time_only(h, torch.randn(2, 4), torch.randn(2, 3))
    with pytest.raises(ValueError, match="channels"):
        time_only(torch.randn(2, 5, 7), torch.randn(2, 4))


def _norm_cases():
    return [
        ("layer", lambda: nn.LayerNorm(6), (3, 7, 6), True),
        ("layer_no_affine", lambda: nn.LayerNorm(6, elementwise_affine=False), (3, 7, 6), True),
        ("layer_no_bias", lambda: nn.LayerNorm(6, bias=False), (3, 2, 5, 6), True),
        ("group", lambda: nn.GroupNorm(3, 6), (3, 6, 4, 5), False),
    ]


@pytest.mark.parametrize("name, make_norm, shape, channels_last", _norm_cases())
@pytest.mark.parametrize("time_dim, z_dim", [(4, 5), (4, None), (None, 5), (None, None)])
def test_the_folded_norm_and_film_equal_the_norm_then_film(name, make_norm, shape, channels_last, time_dim, z_dim):
    torch.manual_seed(0)
    norm, film = make_norm().double(), FiLM(6, time_dim, z_dim, channels_last=channels_last).double()
    with torch.no_grad():  # a trained norm's affine map, not the identity it starts from
        for p in norm.parameters():
            p.copy_(torch.randn_like(p))
    h = torch.randn(shape, dtype=torch.double, requires_grad=True)
    t_emb = torch.randn(3, time_dim, dtype=torch.double, requires_grad=True) if time_dim else None
    z = torch.randn(3, z_dim, dtype=torch.double, requires_grad=True) if z_dim else None
    leaves = [h, *(v for v in (t_emb, z) if v is not None), *norm.parameters(), *film.parameters()]
    grad = torch.randn(shape, dtype=torch.double)
    expected = film(norm(h), t_emb, z)
    expected_grads = torch.autograd.grad(expected, leaves, grad)
    folded = film.normalised(norm, h, t_emb, z)
    assert torch.allclose(folded, expected, atol=1e-12)
    for got, want in zip(torch.autograd.grad(folded, leaves, grad), expected_grads):
        assert torch.allclose(got, want, atol=1e-10)


@pytest.mark.parametrize(
    "norm, channels_last, message",
    [
        (nn.LayerNorm(5), True, "LayerNorm over the 6 channels"),
        (nn.GroupNorm(2, 6), True, "channels_last=True"),
        (nn.LayerNorm(6), False, "channels_last=False"),
        (nn.BatchNorm1d(6), True, "BatchNorm1d"),
    ],
)
def test_the_folded_norm_rejects_a_norm_it_cannot_fold(norm, channels_last, message):
    film = FiLM(6, time_dim=4, channels_last=channels_last)
    h = torch.randn(2, 6, 6)
    with pytest.raises(ValueError, match=message):
        film.normalised(norm, h, torch.randn(2, 4))


@pytest.mark.parametrize("time_dim, z_dim", [(4, 5), (4, None), (None, 5), (None, None)])
def test_the_affines_computed_together_equal_each_pairs_own(time_dim, z_dim):
    """Pairs of several kinds at once (three alike, norms without their affine maps or bias, GroupNorms of
    other widths): the stacked projections give each pair's own values and gradients."""
    torch.manual_seed(0)
    kinds = [(6, lambda: nn.LayerNorm(6), True)] * 3 + [
        (6, lambda: nn.LayerNorm(6, elementwise_affine=False), True),
        (6, lambda: nn.LayerNorm(6, bias=False), True),
        (8, lambda: nn.GroupNorm(4, 8), False),
        (8, lambda: nn.GroupNorm(4, 8), False),
    ]
    pairs = []
    for channels, make_norm, channels_last in kinds:
        film, norm = FiLM(channels, time_dim, z_dim, channels_last=channels_last).double(), make_norm().double()
        with torch.no_grad():
            for p in norm.parameters():
                p.copy_(torch.randn_like(p))
        pairs.append((film, norm))
    t_emb = torch.randn(3, 4, dtype=torch.double, requires_grad=True) if time_dim else None
    z = torch.randn(3, 5, dtype=torch.double, requires_grad=True) if z_dim else None
    leaves = [v for v in (t_emb, z) if v is not None]
    leaves += [p for film, norm in pairs for p in (*film.parameters(), *norm.parameters())]
    own = [film.folded_affine(norm, t_emb, z) for film, norm in pairs]
    together = folded_affines(pairs, t_emb, z)
    if time_dim is None and z_dim is None:
        assert own == together == [None] * len(pairs)
        return
    flat = lambda affines: [part for affine in affines for part in affine]  # noqa: E731
    for got, want in zip(flat(together), flat(own)):
        assert got.shape == want.shape and got.is_contiguous()
        assert torch.allclose(got, want, atol=1e-12)
    weights = [torch.randn_like(part) for part in flat(own)]
    objective = lambda affines: sum((w * part).sum() for w, part in zip(weights, flat(affines)))  # noqa: E731
    grads_own = torch.autograd.grad(objective(own), leaves)
    for got, want in zip(torch.autograd.grad(objective(together), leaves), grads_own):
        assert torch.allclose(got, want, atol=1e-10)


def test_affines_computed_together_check_each_film_against_its_inputs():
    pairs = [(FiLM(6, 4, 5), nn.LayerNorm(6)), (FiLM(6, 4), nn.LayerNorm(6))]
    with pytest.raises(ValueError, match="built without z conditioning"):
        folded_affines(pairs, torch.randn(2, 4), torch.randn(2, 5))
    with pytest.raises(ValueError, match="LayerNorm over the 6 channels"):
        folded_affines([(FiLM(6, 4), nn.LayerNorm(5))], torch.randn(2, 4))
