"""The evaluation of a trained score model (experiments/test_sbdm.py): samples drawn natively at the base size
and at twice it, scored against the data at each size, written as JSON and PNG grids, reproducibly."""

import json

import pytest
import torch
from PIL import Image
from test_pipeline import script
from test_sbdm_training import train

import infdiff.sbdm.likelihood
from infdiff.nn.fno import FNOScoreNet
from infdiff.pipeline.sbdm_evaluation import evaluate_score_model
from infdiff.train.config import ConfigError

FEW = dict(num_samples=8, steps=5, batch_size=4)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny FNO score model trained for 2 steps on 16² shapes."""
    out = tmp_path_factory.mktemp("sbdm_runs")
    train(out, 2, "tiny")
    return out / "tiny"


def grids_shown(result):
    return {key: value for key, value in result.items() if key not in ("date", "out_dir")}


def test_both_sizes_are_sampled_on_their_own_grid_and_scored(run, tmp_path, monkeypatch):
    grids = []
    forward = FNOScoreNet.forward

    def spy(self, x, t):
        grids.append(tuple(x.shape[-2:]))
        return forward(self, x, t)

    monkeypatch.setattr(FNOScoreNet, "forward", spy)
    result = evaluate_score_model(run, out_dir=tmp_path / "eval", **FEW)

    assert set(grids) == {(16, 16), (32, 32)}
    assert grids.count((32, 32)) >= 5 * 2, "5 steps for each of the 2 batches at 32², on the 32² grid"
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text()) == result
    assert result["step"] == 2 and result["checkpoint"].endswith("checkpoint-00000002.pt")
    assert list(result["sizes"]) == ["16", "32"]
    for size, entry in result["sizes"].items():
        assert entry["resolution"] == int(size) and entry["route"] == "native" and entry["num_samples"] == 8
        assert (entry["steps"], entry["sampler"], entry["arch"]) == (5, "euler_maruyama", "fno")
        assert entry["reference"]["split"] == "test" and entry["reference"]["count"] == 8
        metrics = entry["metrics"]
        assert metrics["resolution"] == [int(size)] * 2 and metrics["floor_count"] == 8
        assert metrics["riesz_mmd"] > 0 and metrics["vendi_pixel"] >= 1 and "fid" not in metrics
        with Image.open(tmp_path / "eval" / f"samples_{size}.png") as grid:
            assert grid.height > 2 * int(size), "a row of samples above a row of data"
    pooled = result["sizes"]["16"]["pooled"]
    assert pooled["reference"]["resolution"] == 16 and "average-pooled 2x" in pooled["reference"]["made"]
    assert "pooled" not in result["sizes"]["32"] and result["bits_per_dim"] is None


def test_the_same_seed_gives_the_same_numbers(run, tmp_path):
    first, again, other = (
        evaluate_score_model(run, upscale=1, seed=seed, out_dir=tmp_path / name, **FEW)
        for name, seed in (("a", 3), ("b", 3), ("c", 4))
    )
    assert grids_shown(first) == grids_shown(again)
    assert first["sizes"]["16"]["metrics"] != other["sizes"]["16"]["metrics"]
    assert list(first["sizes"]) == ["16"] and "pooled" not in first["sizes"]["16"]


def test_runs_are_found_by_checkpoint_file_and_experiment_name(run, tmp_path, monkeypatch):
    checkpoint = run / "checkpoints" / "checkpoint-00000002.pt"
    by_file = evaluate_score_model(checkpoint, upscale=1, **FEW)
    assert by_file["out_dir"] == str(run / "evaluation" / "step00000002_16px_x1_euler_maruyama_5steps")
    (tmp_path / "runs").symlink_to(run.parent)
    monkeypatch.chdir(tmp_path)
    by_name = evaluate_score_model("tiny", upscale=1, input_height=24, **FEW)
    assert by_name["out_dir"].endswith("step00000002_24px_x1_euler_maruyama_5steps")
    assert by_name["sizes"]["24"]["reference"]["resolution"] == 24


@pytest.mark.parametrize(
    "where, settings, error, message",
    [
        ("missing_run", {}, FileNotFoundError, "--checkpoint .*missing_run"),
        (None, {"upscale": 0}, ConfigError, "--upscale=0"),
        (None, {"input_height": 4}, ConfigError, "--input_height 4: the fno score network .* cannot sample a 4x4"),
    ],
)
def test_bad_input_fails_before_anything_is_written(run, tmp_path, where, settings, error, message):
    with pytest.raises(error, match=message):
        evaluate_score_model(tmp_path / where if where else run, out_dir=tmp_path / "eval", **FEW, **settings)
    assert not (tmp_path / "eval").exists()


def test_bits_per_dim_of_dequantised_real_images(run, tmp_path, monkeypatch):
    calls = []

    def likelihood(denoise_fn, process, x0, generator=None, rtol=None, atol=None, estimator=None):
        calls.append((tuple(x0.shape), float(x0.min()), float(x0.max()), rtol, atol, estimator))
        return torch.full((len(x0),), 3.0, dtype=torch.float64)

    monkeypatch.setattr(infdiff.sbdm.likelihood, "bits_per_dim", likelihood)
    result = evaluate_score_model(run, upscale=1, bits_per_dim=6, out_dir=tmp_path / "eval", **FEW)
    assert [call[0] for call in calls] == [(4, 3, 16, 16), (2, 3, 16, 16)]
    assert all(-1 <= low and high < 1 for _, low, high, *_ in calls), "dequantised to [-1, 1)"
    assert {tuple(call[3:]) for call in calls} == {(1e-5, 1e-5, "rademacher")}
    bpd = result["bits_per_dim"]
    assert (bpd["mean"], bpd["count"], bpd["resolution"], bpd["reference"]["split"]) == (3.0, 6, 16, "test")


def test_the_command_line(run, tmp_path, capsys):
    main = script("experiments/test_sbdm.py").main
    out = tmp_path / "cli"
    main(
        ["--checkpoint", str(run), "--num_samples", "8", "--steps", "2", "--extractor", "random", "--out_dir", str(out)]
    )
    printed = capsys.readouterr().out
    assert "16px: Riesz MMD" in printed and "32px: Riesz MMD" in printed and f"wrote {out}/metrics.json" in printed
    metrics = json.loads((out / "metrics.json").read_text())["sizes"]["32"]["metrics"]
    assert metrics["extractor"] == "random" and {"fid", "kid", "precision", "vendi"} <= set(metrics)
    with pytest.raises(SystemExit) as exit_code:
        main(["--checkpoint", str(tmp_path / "nowhere")])
    assert exit_code.value.code == 2 and "test_sbdm.py: error: --checkpoint" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--checkpoint", str(run), "--upscale", "0"])
    assert "--upscale: expected" in capsys.readouterr().err


def test_a_model_without_a_likelihood_fails_before_sampling(run, tmp_path, monkeypatch):
    def no_density(*args, **kwargs):
        raise ValueError("the prior has no density")

    monkeypatch.setattr(infdiff.sbdm.likelihood, "bits_per_dim", no_density)
    with pytest.raises(ConfigError, match="--bits_per_dim 2: the prior has no density"):
        evaluate_score_model(run, bits_per_dim=2, out_dir=tmp_path / "eval", **FEW)
    assert not (tmp_path / "eval").exists()


def test_a_run_of_another_stage_is_refused_in_one_line(run, tmp_path, capsys):
    """An ∞-Diff autoencoder checkpoint handed to the score evaluation (or as a score run's warm start) is
    named with the stage that trained it, not left to fail inside the network's call."""
    from infdiff.io import torch_load
    from infdiff.pipeline.runs import STAGE_KEY, trained_run

    checkpoint = sorted((run / "checkpoints").glob("*.pt"))[-1]
    assert torch_load(checkpoint)[STAGE_KEY] == "score_stage"
    state = torch_load(checkpoint)
    state[STAGE_KEY] = "autoencoder_stage"
    other = tmp_path / "other.pt"
    torch.save(state, other)
    with pytest.raises(ConfigError, match=r"other.pt was trained by the autoencoder_stage stage, not the score_stage"):
        trained_run(other, stage="score_stage")
    with pytest.raises(SystemExit):
        script("experiments/test_sbdm.py").main(["--checkpoint", str(other), "--num_samples", "2"])
    assert "trained by the autoencoder_stage stage" in capsys.readouterr().err
