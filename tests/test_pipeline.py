"""End to end: stage 1 → stage 2 → generation, exact resumption, stopping, multi-process training."""

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from infdiff.diffusion import DiscreteDDPM, GaussianMollifier, denoising_loss
from infdiff.diffusion.timesteps import step_times
from infdiff.ops import SparseImage
from infdiff.pipeline.autoencoder import TrainedAutoencoder, build_autoencoder, train_autoencoder
from infdiff.pipeline.build import SamplerSpec, build_loss, build_process
from infdiff.pipeline.generation import generate_recons, generate_samples
from infdiff.pipeline.latent import train_latent
from infdiff.train.checkpoint import CheckpointManager
from infdiff.train.config import ConfigError, parse_config_flags
from infdiff.train.loop import Trainer
from infdiff.train.run_logger import read_metrics
from infdiff.train.stop_signals import TrainingStopped

ROOT = Path(__file__).resolve().parent.parent
TINY_AE = [
    "data.img_size=16",
    "data.num_samples=64",
    "train.batch_size=4",
    "train.max_steps=6",
    "train.log_steps=2",
    "train.plot_samples_steps=6",
    "sampler.steps=3",
    "train.checkpoint_steps=3",
    "train.sample_size=2",
    "model.nf=8",
    "model.time_dim=16",
    "model.num_conv_blocks=1",
    "model.kernel_size=3",
    "model.uno.base_channels=8",
    "model.uno.channel_mults=(1,2)",
    "model.uno.blocks_per_level=(1,1)",
    "model.uno.attn_resolutions=(4,)",
    "model.uno.num_groups=4",
    "model.z_dim=8",
]
TINY_LATENT = [
    "train.batch_size=16",
    "train.max_steps=4",
    "train.log_steps=2",
    "train.eval_steps=2",
    "train.plot_samples_steps=4",
    "train.sample_size=2",
    "train.checkpoint_steps=2",
    "model.hidden=16",
    "model.num_layers=2",
    "model.time_dim=8",
    "sampler.steps=3",
    "data.test_fraction=0.25",
]


def flags(name, config_file, overrides):
    return ["--" + name, str(ROOT / "configs" / config_file)] + [f"--{name}.{o}" for o in overrides]


def tiny_configs(output_dir, *extra_ae):
    out = [f"run.output_dir={output_dir}"]
    configs, _, _ = parse_config_flags(
        flags("config", "shapes_latent_config.py", TINY_LATENT + out)
        + flags("decoder_config", "shapes_32_config.py", TINY_AE + out + list(extra_ae)),
        names=("config", "decoder_config"),
    )
    return configs["decoder_config"], configs["config"]


def script(relative_path):
    """The top-level script at ``relative_path`` as a module (its ``main(argv)`` is what users run)."""
    spec = importlib.util.spec_from_file_location(Path(relative_path).stem, ROOT / relative_path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def png_size(path):
    with Image.open(path) as image:
        return image.size


def newest_state(run):
    return CheckpointManager(Path(run) / "checkpoints").newest_loadable()[1]


def assert_same_final_state(run_a, run_b, step):
    """The newest checkpoints of two runs hold the same step, parameters, EMA and Adam moments."""
    a, b = newest_state(run_a), newest_state(run_b)
    assert a["step"] == b["step"] == step
    for part in ("model", "ema"):
        left = a[part] if part == "model" else a[part]["model"]
        right = b[part] if part == "model" else b[part]["model"]
        for key in left:
            assert torch.equal(left[key], right[key]), f"{part}.{key} differs after resuming"
    assert a["optimizer"]["state"].keys() == b["optimizer"]["state"].keys()
    for key, state in a["optimizer"]["state"].items():
        assert torch.equal(state["exp_avg"], b["optimizer"]["state"][key]["exp_avg"])
    assert a["scheduler"] == b["scheduler"]
    assert a["rng"][0]["generators"][0].equal(b["rng"][0]["generators"][0]), "the loss's generator resumes too"


def test_two_stages_then_samples_at_two_resolutions(tmp_path):
    ae, latent = tiny_configs(tmp_path)
    out_flag = [f"run.output_dir={tmp_path}"]
    ae_flags = flags("config", "shapes_32_config.py", TINY_AE + out_flag)
    script("train_inf_ae_diffusion.py").main(ae_flags)
    run = tmp_path / "shapes_32"
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [
        "checkpoint-00000003.pt",
        "checkpoint-00000006.pt",
    ]
    recon = json.loads((run / "samples" / "recon_00000006.json").read_text())
    assert {"recon_mse_1x", "recon_mse_2x"} <= recon.keys()
    assert png_size(run / "samples" / "recon_00000006.png")[1] > 16 + 16 + 32

    script("train_latent_diffusion.py").main(
        flags("config", "shapes_latent_config.py", TINY_LATENT + out_flag)
        + flags("decoder_config", "shapes_32_config.py", out_flag)
    )
    latent_run = tmp_path / "shapes_32_sampler"
    metrics = read_metrics(latent_run / "metrics.jsonl")
    assert any("test_loss" in m for m in metrics)
    assert json.loads((latent_run / "latents.json").read_text()) == {"train": 48, "test": 16, "z_dim": 8}

    for size in (16, 32):
        out = generate_samples(latent, ae, num_samples=3, sample_img_size=size, sampling_steps=3, batch_size=2)
        files = sorted(p.name for p in out.directory.glob("sample_*.png"))
        assert files == ["sample_00000.png", "sample_00001.png", "sample_00002.png"]
        assert png_size(out.directory / "sample_00000.png") == (size, size)
        assert out.images.shape == (3, 3, size, size)
        assert json.loads((out.directory / "samples.json").read_text())["img_size"] == size
    again = generate_samples(latent, ae, num_samples=3, sample_img_size=32, sampling_steps=3, batch_size=2)
    assert again.directory.name.endswith("_1"), "an earlier output folder must never be overwritten"
    torch.testing.assert_close(again.images, out.images, msg="same seed must give the same samples")
    script("experiments/generate_samples.py").main(  # the runs' saved configs: no training override repeated
        flags("config", "shapes_latent_config.py", out_flag)
        + flags("decoder_config", "shapes_32_config.py", out_flag)
        + ["--sample_img_size", "48", "--sampling_steps", "2", "--num_samples", "2", "--noise_size", "96"]
    )
    assert png_size(latent_run / "samples_48px_2steps" / "sample_00001.png") == (48, 48)
    assert json.loads((latent_run / "samples_48px_2steps" / "samples.json").read_text())["noise_size"] == 96

    script("experiments/generate_recons.py").main(
        flags("decoder_config", "shapes_32_config.py", out_flag)
        + ["--sizes", "16", "32", "--num_images", "2", "--sampling_steps", "3", "--noise_size", "32"]
    )
    recons = run / "recons"
    info = json.loads((recons / "recons.json").read_text())
    assert {"mse_16px", "mse_32px"} <= info.keys() and info["noise_size"] == 32
    assert info["split"] == "test" and info["reference"] == "exact rendering", "held-out images by default"
    assert png_size(recons / "recon_32px_00001.png") == (32, 32)


def test_stage_one_resume_is_exact(tmp_path):
    constant = "optimizer.decay_fraction=0.0"  # the run is cut by max_steps, which moves a decaying schedule
    whole, _ = tiny_configs(tmp_path / "whole", constant)
    train_autoencoder(whole)
    half, _ = tiny_configs(tmp_path / "split", constant, "train.max_steps=3")
    train_autoencoder(half)
    resumed, _ = tiny_configs(tmp_path / "split", constant)
    with pytest.warns(UserWarning, match="differs from the checkpoint's: train.max_steps: 3 -> 6"):
        train_autoencoder(resumed)
    assert_same_final_state(tmp_path / "whole" / "shapes_32", tmp_path / "split" / "shapes_32", step=6)


def test_stage_one_stopped_and_resumed_is_exact_with_a_decaying_rate(tmp_path, monkeypatch):
    decaying = "optimizer.decay_fraction=0.5"
    whole, _ = tiny_configs(tmp_path / "whole", decaying)
    train_autoencoder(whole)
    split, _ = tiny_configs(tmp_path / "split", decaying)
    train_step = Trainer.train_step

    def interrupted_after_the_third_update(self, batch):
        metrics = train_step(self, batch)
        if self.step == 2:
            os.kill(os.getpid(), signal.SIGINT)
        return metrics

    monkeypatch.setattr(Trainer, "train_step", interrupted_after_the_third_update)
    with pytest.raises(TrainingStopped) as stopped:
        train_autoencoder(split)
    assert stopped.value.step == 3
    monkeypatch.undo()
    train_autoencoder(split)
    assert_same_final_state(tmp_path / "whole" / "shapes_32", tmp_path / "split" / "shapes_32", step=6)


def test_stage_two_resume_is_exact_and_reuses_the_latent_cache(tmp_path):
    ae, whole = tiny_configs(tmp_path)
    train_autoencoder(ae)
    train_latent(whole, ae)
    _, half = tiny_configs(tmp_path, "train.max_steps=2")
    half.run.experiment = "split"
    train_latent(half, ae)
    cache = tmp_path / "split" / "latents.pt"
    stamp = cache.stat().st_mtime_ns
    _, resumed = tiny_configs(tmp_path)
    resumed.run.experiment = "split"
    train_latent(resumed, ae)
    assert cache.stat().st_mtime_ns == stamp, "latents must be encoded once per encoder checkpoint"
    a, b = newest_state(tmp_path / "shapes_32_sampler"), newest_state(tmp_path / "split")
    assert a["step"] == b["step"] == 4
    for key, value in a["ema"]["model"].items():
        assert torch.equal(value, b["ema"]["model"][key]), key
    torch.testing.assert_close(a["latent_mean"], b["latent_mean"])


def test_generation_without_a_trained_run_fails_clearly(tmp_path):
    ae, latent = tiny_configs(tmp_path)
    with pytest.raises(FileNotFoundError, match="no checkpoint for experiment 'shapes_32'"):
        generate_recons(ae, [16], num_images=1, sampling_steps=2)


def test_demo_script_runs_the_whole_pipeline(tmp_path, capsys):
    """``make demo``'s script on tiny configs: both stages, samples at every size, reconstructions."""
    out = [f"run.output_dir={tmp_path}"]
    script("experiments/demo.py").main(
        flags("config", "shapes_32_config.py", TINY_AE + out)
        + flags("latent_config", "shapes_latent_config.py", TINY_LATENT + out)
        + "--sizes 16 24 --num_samples 2 --metric_samples 4 --sampling_steps 2 --recon_sampling_steps 2".split()
    )
    comparison = tmp_path / "shapes_32_sampler" / "demo_samples.png"
    output = capsys.readouterr().out
    assert comparison.exists() and str(comparison) in output
    metrics = json.loads((tmp_path / "shapes_32_sampler" / "demo_metrics.json").read_text())
    assert [score["resolution"] for score in metrics["scores"]] == [16, 24]
    assert all(score["count"] == 4 and score["reference_sharpness"] > 0 for score in metrics["scores"])
    assert "16px: KID" in output and "24px: KID" in output
    recons = json.loads((tmp_path / "shapes_32" / "recons" / "recons.json").read_text())
    assert recons["noise_size"] == 48 and recons["sampling_steps"] == 2  # lcm of the sizes
    for size in (16, 24):
        samples = json.loads((tmp_path / "shapes_32_sampler" / f"samples_{size}px_2steps" / "samples.json").read_text())
        assert samples["noise_size"] == 48


def stop_with_sigterm_once_training(command, cwd, metrics):
    """Run ``command``, send SIGTERM once stage 1 has logged, and return ``(status, output)``."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    proc = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 120
    while not (metrics.exists() and metrics.read_text().strip()) and time.time() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=120)
    return proc.returncode, output


@pytest.mark.parametrize("program", ["train_inf_ae_diffusion.py", "experiments/demo.py"])
def test_sigterm_writes_a_checkpoint_and_exits_cleanly(tmp_path, program):
    """A stopped stage 1 keeps its checkpoint and ends the program: the demo must not go on to
    stage 2 and sampling with a half-trained autoencoder."""
    out = [f"run.output_dir={tmp_path}"]
    args = flags(
        "config", "shapes_32_config.py", TINY_AE + out + ["train.max_steps=100000", "train.checkpoint_steps=100000"]
    )
    if program.endswith("demo.py"):
        args += flags("latent_config", "shapes_latent_config.py", TINY_LATENT + out)
    status, output = stop_with_sigterm_once_training(
        [sys.executable, str(ROOT / program), *args], tmp_path, tmp_path / "shapes_32" / "metrics.jsonl"
    )
    assert status == 0, output
    state = newest_state(tmp_path / "shapes_32")
    assert 2 <= state["step"] < 100000
    assert "stopped at step" in output and "Traceback" not in output
    assert not (tmp_path / "shapes_32_sampler").exists()


@pytest.mark.skipif(
    shutil.which("torchrun") is None and not (Path(sys.executable).parent / "torchrun").exists(),
    reason="torchrun not installed",
)
def test_two_process_ddp_training_on_cpu_writes_and_reports_from_rank_zero_only(tmp_path):
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")
    args = flags(
        "config",
        "shapes_32_config.py",
        TINY_AE
        + [f"run.output_dir={tmp_path}", "train.max_steps=4", "train.checkpoint_steps=2", "train.plot_samples_steps=4"],
    )
    env = dict(os.environ, OMP_NUM_THREADS="1")

    def train(*extra):
        command = [torchrun, "--nproc_per_node", "2", "--master_port", "29517", str(ROOT / "train_inf_ae_diffusion.py")]
        result = subprocess.run(
            command + args + list(extra), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
        )
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout + result.stderr

    train()
    run = tmp_path / "shapes_32"
    logged = [m["step"] for m in read_metrics(run / "metrics.jsonl") if "loss" in m]
    assert logged == [2, 4], "each step must be logged once (rank 0 only)"
    state = newest_state(run)
    assert state["step"] == 4 and len(state["rng"]) == 2, "both processes' RNG states are kept"
    first, second = (rng["generators"][0] for rng in state["rng"])
    assert not first.equal(second), "each process draws its own times, noise and subsets"
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [
        "checkpoint-00000002.pt",
        "checkpoint-00000004.pt",
    ]
    (run / "checkpoints" / ".checkpoint-00000006.pt.999999999.0badc0de.tmp").write_bytes(b"cut short")
    output = train("--config.train.max_steps=6")
    assert output.count("resuming at step 4") == 1, "rank 0 alone reports the resume\n" + output
    assert output.count("removed 1 partial checkpoint file") == 1, output
    assert output.count("UserWarning: resuming with a config that differs") == 1, output
    assert output.count("stage 1 run:") == 1, output


class Passthrough(nn.Module):
    """An "autoencoder" whose x0 estimate is its input: samples are then functions of the noise alone."""

    channels = 3

    def conditioned_on(self, z):
        return lambda x, t: x


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_decoding_with_a_noise_size_gives_one_sample_at_several_resolutions(sampler):
    process = DiscreteDDPM.named("cosine", 100, GaussianMollifier(1.0, 16), mollified_states=True)
    autoencoder = TrainedAutoencoder(Passthrough(), process, "x0", SamplerSpec(sampler, 10))
    z = torch.zeros(2, 4)

    def pooled_correlation(noise_size):
        small, large = (
            autoencoder.decode(z, size, generator=torch.Generator().manual_seed(0), noise_size=noise_size)
            for size in (16, 32)
        )
        a, b = small.flatten() - small.mean(), F.avg_pool2d(large, 2).flatten()
        b = b - b.mean()
        return float(a @ b / (a.norm() * b.norm()))

    assert pooled_correlation(32) > 0.95  # measured 0.99 for both samplers
    assert abs(pooled_correlation(None)) < 0.3  # independent noise per size: measured |r| ≤ 0.07


def test_stage1_step_benchmark_writes_its_json(tmp_path):
    """``benchmarks/stage1_step.py`` (the source of the committed GPU numbers) on a tiny config."""
    out = tmp_path / "bench.json"
    script("benchmarks/stage1_step.py").main(
        ["--out", str(out)] + flags("config", "shapes_32_config.py", TINY_AE + [f"run.output_dir={tmp_path}"])
    )
    result = json.loads(out.read_text())
    ae, _ = tiny_configs(tmp_path)
    assert result["parameters"] == sum(p.numel() for p in build_autoencoder(ae).parameters())
    assert result["img_size"] == 16 and result["batch_size"] == 4 and result["step_time_s"] > 0
    assert [m["step"] for m in result["metrics"] if "loss" in m] == [2, 4, 6]
    assert (tmp_path / "shapes_32" / "samples" / "recon_00000006.png").exists()


def test_a_subset_of_every_pixel_trains_on_the_dense_paths_with_the_sparse_loss(tmp_path):
    ae, _ = tiny_configs(tmp_path)
    torch.manual_seed(0)
    model = build_autoencoder(ae).eval()
    process = build_process(ae)
    x0 = torch.rand(2, 3, 16, 16) * 2 - 1
    t, white = step_times(torch.tensor([3, 700]), 1000), torch.randn(2, 3, 16, 16)
    everywhere = torch.arange(256).repeat(2, 1)
    dense = denoising_loss(process, lambda x, s: model(x, s, encoder_input=x0)[0], x0, t, white, None, "x0")
    sparse = denoising_loss(
        process,
        lambda x, s: model(x, s, encoder_input=SparseImage.from_dense(x0, everywhere))[0],
        x0,
        t,
        white,
        everywhere,
        "x0",
    )
    torch.testing.assert_close(dense, sparse, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("encoder_points", [20, 7, 256])
def test_the_encoder_sees_its_own_number_of_pixels(tmp_path, encoder_points):
    ae, _ = tiny_configs(tmp_path, "loss.points=20", f"loss.encoder_points={encoder_points}")
    model = build_autoencoder(ae)
    seen = []
    model.encoder.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    build_loss(ae, build_process(ae))(model, torch.zeros(2, 3, 16, 16))
    (given,) = seen
    if encoder_points == 256:
        assert given.shape == (2, 3, 16, 16), "every pixel: the encoder's dense path"
    else:
        assert isinstance(given, SparseImage) and given.values.shape[:2] == (2, encoder_points)


@pytest.mark.parametrize("key, value", [("points", 0), ("points", 257), ("encoder_points", 1000)])
def test_a_pixel_count_outside_the_grid_names_its_key(tmp_path, key, value):
    ae, _ = tiny_configs(tmp_path, f"loss.{key}={value}")
    with pytest.raises(ConfigError, match=rf"loss.{key}={value}: expected a pixel count from 1 to the 256 pixels"):
        build_loss(ae, build_process(ae))


def test_variant_benchmark_writes_its_json(tmp_path):
    out = tmp_path / "bench.json"
    script("benchmarks/stage1_variants.py").main(
        [
            "--out",
            str(out),
            "--repeats",
            "1",
            "--breakdown",
            "--variant",
            "quarter",
            "--variant",
            "all",
            "loss.points=256",
            "mc_integral.encoder_q_sample=256",
            "--variant",
            "wider",
            "model.nf=16",
        ]
        + flags("config", "shapes_32_config.py", TINY_AE + ["loss.encoder_points=64"])
    )
    result = json.loads(out.read_text())
    variants = result["variants"]
    assert result["baseline"] == "quarter" and list(variants) == ["quarter", "all", "wider"]
    assert {name: (v["points"], v["encoder_points"]) for name, v in variants.items()} == {
        "quarter": (64, 64),
        "all": (256, 256),
        "wider": (64, 64),
    }
    assert variants["wider"]["parameters"] > variants["quarter"]["parameters"] == variants["all"]["parameters"]
    assert variants["quarter"]["ratio_to_baseline"] == 1.0
    assert all(v["median_step_s"] > 0 for v in variants.values())
    for v in variants.values():
        parts, counts = v["breakdown"]["fractions"], v["breakdown"]["counts"]
        assert set(counts) == {"operators_computing", "operators_views"}
        assert counts["operators_computing"] > 100 and counts["operators_views"] > 0
        assert set(parts) == {
            "sparse_conv",
            "neighbour_table",
            "knn",
            "modulated_norm",
            "optimiser",
            "grid_unet",
            "other",
        }
        assert 0 < parts["grid_unet"] < 1 and parts["knn"] > 0 and parts["optimiser"] > 0 < parts["modulated_norm"]
        assert v["resident_bytes"] > 4 * v["parameters"], "fp32 parameters and Adam's two moments"
    fractions = {name: v["breakdown"]["fractions"] for name, v in variants.items()}
    assert fractions["all"]["sparse_conv"] == 0 < fractions["quarter"]["sparse_conv"], (
        "all pixels run the dense path, a subset the sparse kernels"
    )
    assert out.with_suffix(".md").read_text().count("| quarter |") == 3, "a row in each table"


def test_variant_benchmark_trains_each_variant_with_its_own_process(tmp_path):
    out = tmp_path / "bench.json"
    script("benchmarks/stage1_variants.py").main(
        ["--out", str(out), "--repeats", "2", "--variant", "paper", "--variant", "short", "process.steps=40"]
        + flags("config", "shapes_32_config.py", TINY_AE)
    )
    variants = json.loads(out.read_text())["variants"]
    assert {name: v["process_steps"] for name, v in variants.items()} == {"paper": 1000, "short": 40}


@pytest.mark.parametrize("variant, message", [(["x", "model.nff=3"], "no such key"), (["x", "model.nf"], "key=value")])
def test_variant_benchmark_rejects_bad_overrides(tmp_path, variant, message):
    with pytest.raises(ConfigError, match=message):
        script("benchmarks/stage1_variants.py").main(
            ["--out", str(tmp_path / "b.json"), "--variant", *variant] + flags("config", "shapes_32_config.py", TINY_AE)
        )


def test_the_learning_rate_decays_linearly_to_zero_over_its_fraction_of_the_steps(tmp_path):
    ae, _ = tiny_configs(tmp_path, "optimizer.warmup_steps=0", "optimizer.decay_fraction=0.67")
    train_autoencoder(ae)
    logged = {m["step"]: m["lr"] for m in read_metrics(tmp_path / "shapes_32") if "lr" in m}
    rate = ae.optimizer.learning_rate
    assert logged == pytest.approx({2: rate, 4: rate / 2, 6: 0.0}), "lr after step s: rate × min(1, (6 − s) / 4)"


def test_stage_two_does_not_depend_on_whether_the_latents_were_cached(tmp_path):
    """The loss draws from the loop's own generator, so encoding (which draws from the global one) changes nothing."""
    ae, fresh = tiny_configs(tmp_path)
    train_autoencoder(ae)
    train_latent(fresh, ae)
    _, cached = tiny_configs(tmp_path)
    cached.run.experiment = "cached"
    (tmp_path / "cached").mkdir()
    shutil.copy(tmp_path / "shapes_32_sampler" / "latents.pt", tmp_path / "cached" / "latents.pt")
    train_latent(cached, ae)
    a, b = newest_state(tmp_path / "shapes_32_sampler"), newest_state(tmp_path / "cached")
    for key, value in a["ema"]["model"].items():
        assert torch.equal(value, b["ema"]["model"][key]), key


def test_a_decay_fraction_outside_zero_to_one_names_its_key(tmp_path):
    ae, _ = tiny_configs(tmp_path, "optimizer.decay_fraction=1.5")
    with pytest.raises(ValueError, match=r"--config.optimizer.decay_fraction=1.5: expected a number >= 0 and <= 1"):
        train_autoencoder(ae)
