"""Runs as a user meets them: the saved config is the source of truth, the paper's command lines work,
and a run says what it is before it starts, in plain lines when its output is not a terminal."""

import json
import os
import subprocess
import sys

import pytest

from infdiff.pipeline.autoencoder import load_autoencoder
from infdiff.train.config import ConfigError
from test_pipeline import ROOT, TINY_AE, TINY_LATENT, flags, script, tiny_configs


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny stage-1 run trained from the command line with the tiny overrides (not repeated later)."""
    out = tmp_path_factory.mktemp("runs")
    script("train_inf_ae_diffusion.py").main(
        flags("config", "shapes_32_config.py", TINY_AE + [f"run.output_dir={out}"])
    )
    return out


def stage_two(out, *decoder_overrides):
    script("train_latent_diffusion.py").main(
        flags("config", "shapes_latent_config.py", TINY_LATENT + [f"run.output_dir={out}"])
        + flags("decoder_config", "shapes_32_config.py", [f"run.output_dir={out}", *decoder_overrides])
    )


def test_overrides_that_leave_the_weights_alone_apply_to_the_saved_config(trained, capsys):
    stage_two(trained, "data.num_workers=0", "sampler.steps=2")
    output = capsys.readouterr().out
    assert "using the config saved with" in output and "model.nf (given 32, trained 8)" in output
    saved = json.loads((trained / "shapes_32_sampler" / "config.json").read_text())
    assert saved["model"]["hidden"] == 16


@pytest.mark.parametrize(
    "override, key",
    [
        ("model.nf=16", "model.nf=8"),
        ("model.uno_mults=(1,2,2)", "model.uno.channel_mults=[1, 2]"),
        ("loss.target=epsilon", "loss.target='x0'"),
    ],
)
def test_overrides_that_contradict_the_trained_weights_are_refused(trained, capsys, override, key):
    with pytest.raises(SystemExit) as stopped:
        stage_two(trained, override)
    assert stopped.value.code == 2
    error = capsys.readouterr().err
    assert f"--decoder_config.{override} (the run was trained with {key})" in error
    assert "Traceback" not in error


def test_a_library_caller_with_a_stale_config_is_told_which_keys_differ(trained):
    stale, _ = tiny_configs(trained, "model.nf=16")
    with pytest.raises(ConfigError, match=r"does not match the checkpoint .* in model.nf \(given 16, trained 8\)"):
        load_autoencoder(stale)


def test_a_run_without_its_saved_config_says_how_to_record_it(trained, tmp_path, capsys):
    (tmp_path / "shapes_32" / "checkpoints").mkdir(parents=True)
    for path in (trained / "shapes_32" / "checkpoints").iterdir():
        (tmp_path / "shapes_32" / "checkpoints" / path.name).write_bytes(path.read_bytes())
    with pytest.raises(SystemExit):
        stage_two(tmp_path)
    assert "config.json is missing" in capsys.readouterr().err


def test_the_paper_code_command_line_spellings_train(tmp_path):
    legacy = [
        "mc_integral.q_sample=32",
        "mc_integral.encoder_q_sample=64",
        "diffusion.model_mean_type=x0",
        "model.uno_mults=(1,2)",
        "model.uno_base_channels=8",
        "model.uno_blocks_per_level=(1,1)",
        "model.uno_attn_resolutions=(4,)",
        "model.uno_num_groups=4",
        "model.time_emb_dim=16",
        "train.plot_sampling_steps=2",
        "diffusion.steps=50",
    ]
    tiny = [o for o in TINY_AE if not o.startswith(("model.uno", "model.time_dim", "sampler"))]
    script("train_inf_ae_diffusion.py").main(
        flags("config", "shapes_32_config.py", tiny + legacy + [f"run.output_dir={tmp_path}"])
    )
    saved = json.loads((tmp_path / "shapes_32" / "config.json").read_text())
    assert (saved["loss"]["points"], saved["loss"]["encoder_points"], saved["loss"]["target"]) == (32, 64, "x0")
    assert (saved["model"]["uno"]["channel_mults"], saved["sampler"]["steps"], saved["process"]["steps"]) == (
        [1, 2],
        2,
        50,
    )


def test_a_run_prints_what_it_is_before_training_and_plain_lines_when_not_a_terminal(tmp_path):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    command = [
        sys.executable,
        str(ROOT / "train_inf_ae_diffusion.py"),
        *flags(
            "config",
            "shapes_32_config.py",
            TINY_AE + [f"run.output_dir={tmp_path}", "train.max_steps=4", "run.deterministic=true"],
        ),
    ]
    first = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    lines = first.stdout.splitlines()
    assert lines[0] == f"run {tmp_path / 'shapes_32'}: fresh"
    assert lines[1].startswith("  data: shapes, 64 images of 3×16² (random flips); the loss sees 64")
    assert "sparse_autoencoder" in lines[2] and "parameters" in lines[2] and "loss autoencoder (target x0)" in lines[2]
    assert lines[3].startswith("  device: cpu") and "deterministic" in lines[3] and "batch 4, 4 steps" in lines[3]
    assert any(line.startswith("step 2 | loss") for line in lines)
    assert "\r" not in first.stdout + first.stderr, "no progress-bar redraws in a redirected log"
    again = subprocess.run(
        [*command[:-1], "--config.train.max_steps=6"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert again.stdout.splitlines()[0] == f"run {tmp_path / 'shapes_32'}: resuming at step 4"


def test_the_reproducibility_benchmark_compares_fresh_runs(tmp_path):
    out = tmp_path / "repro.json"
    tiny = [o for o in TINY_AE if not o.startswith(("train.max_steps", "train.checkpoint_steps", "train.plot"))]
    config = str(ROOT / "configs" / "shapes_32_config.py")
    variants = [
        ["--variant", "first", "1", *tiny],
        ["--variant", "again", "1", *tiny],
        ["--variant", "other_seed", "1", *tiny, "run.seed=1"],
    ]
    script("benchmarks/reproducibility.py").main(
        ["--config", config, "--steps", "3", "--out", str(out)] + sum(variants, [])
    )
    variants = json.loads(out.read_text())["variants"]
    assert variants["first"]["bitwise_equal"] and variants["again"]["bitwise_equal"]
    assert not variants["other_seed"]["bitwise_equal"] and variants["other_seed"]["max_abs_ema_difference"] > 0
    assert variants["again"]["recon_mse_1x"] == variants["first"]["recon_mse_1x"]
