"""Faults a demanding user meets: planted or damaged files, bad settings, interrupts, leftovers.

Each test reproduces one fault of issue 15 from the command line (or the library) and checks that it
ends in one clear line naming what to change, or is survived, never in silence, a traceback or code
run from a file.
"""

import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

from infdiff.pipeline.autoencoder import train_autoencoder
from infdiff.pipeline.generation import generate_samples
from infdiff.pipeline.latent import train_latent
from infdiff.train.config import ConfigError
from test_pipeline import ROOT, TINY_AE, TINY_LATENT, flags, script, tiny_configs
from test_train_utils_checkpoint import Payload


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny two-stage run (stage 1 ``shapes_32``, stage 2 ``shapes_32_sampler``) to copy from."""
    out = tmp_path_factory.mktemp("trained")
    ae, latent = tiny_configs(out)
    train_autoencoder(ae)
    train_latent(latent, ae)
    return out


@pytest.fixture
def runs(trained, tmp_path):
    """A private copy of the trained runs, free to be damaged."""
    shutil.copytree(trained, tmp_path, dirs_exist_ok=True)
    return tmp_path


def sampling_flags(out, *extra):
    out_flag = [f"run.output_dir={out}"]
    return (
        flags("config", "shapes_latent_config.py", out_flag)
        + flags("decoder_config", "shapes_32_config.py", out_flag)
        + ["--num_samples", "2", "--batch_size", "2", "--sampling_steps", "2", "--latent_sampling_steps", "2"]
        + list(extra)
    )


def fails_with_one_line(run, capsys, *expected):
    """``run()`` ends the program with status 2 (130 for interrupts) and a last line holding ``expected``."""
    with pytest.raises(SystemExit) as stopped:
        run()
    error = capsys.readouterr().err
    assert stopped.value.code == 2, error
    assert "Traceback" not in error
    last = error.strip().splitlines()[-1]
    for text in expected:
        assert text in last, last
    return last


# -- item 3: nothing loaded from a run directory runs code ------------------------------------------------
def test_planted_checkpoints_are_refused_when_sampling_and_training_stage_two(runs, capsys):
    marker = runs / "code ran"
    for run in ("shapes_32", "shapes_32_sampler"):
        torch.save({"step": 99999999, "model": Payload(marker)}, runs / run / "checkpoints" / "checkpoint-99999999.pt")
    with pytest.warns(RuntimeWarning, match="refusing .*checkpoint-99999999.pt holds objects other than tensors"):
        script("experiments/generate_samples.py").main(sampling_flags(runs))
    with pytest.warns(RuntimeWarning, match="refusing .*checkpoint-99999999.pt"):
        script("train_latent_diffusion.py").main(
            flags("config", "shapes_latent_config.py", TINY_LATENT + [f"run.output_dir={runs}"])
            + flags("decoder_config", "shapes_32_config.py", [f"run.output_dir={runs}"])
        )
    assert not marker.exists()
    assert "samples written to" in capsys.readouterr().out


def test_a_planted_latent_cache_is_refused_and_the_codes_encoded_again(runs, capsys):
    marker = runs / "code ran"
    (runs / "fresh").mkdir()
    torch.save({"identity": None, "latents": Payload(marker)}, runs / "fresh" / "latents.pt")
    ae, latent = tiny_configs(runs)
    latent.run.experiment = "fresh"
    train_latent(latent, ae)
    assert not marker.exists()
    assert "refusing" in capsys.readouterr().out
    assert torch.load(runs / "fresh" / "latents.pt", weights_only=True)["latents"].shape[1] == 8


# -- items 4 and 5: every value checked against its declared type and range before anything is built ---------
@pytest.mark.parametrize(
    "override, expected",
    [
        ("train.batch_size=True", "--config.train.batch_size=True: expected an integer >= 1"),
        ("train.batch_size=0", "--config.train.batch_size=0: expected an integer >= 1"),
        ("train.batch_size=-4", "--config.train.batch_size=-4"),
        ("train.checkpoint_steps=0", "--config.train.checkpoint_steps=0"),
        ("train.log_steps=0", "--config.train.log_steps=0"),
        ("train.sample_size=0", "--config.train.sample_size=0"),
        ("train.ema_decay=1.5", "--config.train.ema_decay=1.5: expected a number >= 0 and <= 1"),
        ("model.z_dim=0", "--config.model.z_dim=0"),
        ("model.uno_mults=(1,'a')", "--config.model.uno.channel_mults=(1, 'a'): expected a tuple of one or more"),
        ("model.uno.channel_mults=()", "--config.model.uno.channel_mults=()"),
        ("run.experiment=", "--config.run.experiment='': expected a non-empty name without '/'"),
        ("run.experiment=a/b", "--config.run.experiment='a/b'"),
        ("optimizer.learning_rate=0", "--config.optimizer.learning_rate=0.0: expected a number > 0"),
        ("loss.target=noise", "--config.loss.target='noise': expected one of"),
        ("data.name=nope", "--config.data.name='nope': expected one of"),
        ("train.batch_size=128", "train.batch_size=128 is more than the 64 training images"),
    ],
)
def test_a_bad_stage_one_value_is_named_before_anything_is_built(tmp_path, capsys, override, expected):
    argv = flags("config", "shapes_32_config.py", TINY_AE + [f"run.output_dir={tmp_path}", override])
    fails_with_one_line(lambda: script("train_inf_ae_diffusion.py").main(argv), capsys, expected)
    assert list(tmp_path.iterdir()) == [], "nothing is written before the config is checked"


@pytest.mark.parametrize("fraction", ["-0.5", "1.0"])
def test_a_test_fraction_outside_zero_to_one_is_refused(runs, capsys, fraction):
    argv = flags(
        "config", "shapes_latent_config.py", TINY_LATENT + [f"run.output_dir={runs}", f"data.test_fraction={fraction}"]
    ) + flags("decoder_config", "shapes_32_config.py", [f"run.output_dir={runs}"])
    expected = f"--config.data.test_fraction={float(fraction)}: expected a number >= 0 and < 1"
    fails_with_one_line(lambda: script("train_latent_diffusion.py").main(argv), capsys, expected)


def test_a_config_without_a_model_section_is_named(tmp_path, capsys):
    config = tmp_path / "no_model.py"
    config.write_text(
        "from configs.shapes_32_config import get_config as full\n\n"
        "def get_config():\n    config = full()\n    del config['model']\n    return config\n"
    )
    sys.path.insert(0, str(ROOT))
    try:
        argv = ["--config", str(config), f"--config.run.output_dir={tmp_path}"]
        fails_with_one_line(
            lambda: script("train_inf_ae_diffusion.py").main(argv), capsys, "--config has no 'model' section"
        )
    finally:
        sys.path.remove(str(ROOT))


def test_resuming_with_weights_of_another_shape_names_the_key(runs, capsys):
    argv = flags("config", "shapes_32_config.py", TINY_AE + [f"run.output_dir={runs}", "model.nf=16"])
    fails_with_one_line(
        lambda: script("train_inf_ae_diffusion.py").main(argv),
        capsys,
        "model.nf (given 16, trained 8)",
        "resume with the run's values, or start a new run",
    )


@pytest.mark.parametrize(
    "option, expected",
    [
        (["--num_samples", "0"], "argument --num_samples: expected an integer >= 1, got '0'"),
        (["--num_samples", "-3"], "argument --num_samples"),
        (["--batch_size", "0"], "argument --batch_size"),
        (["--sample_img_size", "0"], "argument --sample_img_size: expected an integer >= 2"),
        (["--sample_img_size", "1"], "argument --sample_img_size"),
        (["--sample_img_size", "-8"], "argument --sample_img_size"),
        (["--sampling_steps", "0"], "argument --sampling_steps"),
        (["--sample_img_size", "20", "--noise_size", "50"], "--noise_size 50 is not a multiple of the size(s) 20"),
        (["--decoder_config.run.experiment=nope"], "(--decoder_config.run.experiment)"),
    ],
)
def test_bad_generation_options_are_named_and_leave_no_folder(runs, capsys, option, expected):
    before = sorted(p.name for p in (runs / "shapes_32_sampler").iterdir())
    last = fails_with_one_line(
        lambda: script("experiments/generate_samples.py").main(sampling_flags(runs, *option)), capsys, expected
    )
    assert "--config.run.experiment" not in last and "train_inf_ae_diffusion.py --config " not in last
    assert sorted(p.name for p in (runs / "shapes_32_sampler").iterdir()) == before


@pytest.mark.parametrize("size", [4096, 20000])
def test_decoding_that_cannot_fit_in_memory_is_refused_with_the_setting_that_fits(runs, capsys, size):
    last = fails_with_one_line(
        lambda: script("experiments/generate_samples.py").main(
            sampling_flags(runs, "--sample_img_size", str(size), "--num_samples", "64", "--batch_size", "64")
        ),
        capsys,
        f"--sample_img_size {size} with --batch_size 64: decoding needs about",
        "GiB are free",
    )
    assert "--batch_size" in last.split("free;")[1] or "largest --sample_img_size" in last


# -- item 7: no leftovers, no writing beside a file ------------------------------------------------------------
def test_an_out_dir_that_is_a_file_is_refused(runs, capsys):
    target = runs / "samples.png"
    target.write_bytes(b"not a folder")
    fails_with_one_line(
        lambda: script("experiments/generate_samples.py").main(sampling_flags(runs, "--out_dir", str(target))),
        capsys,
        f"--out_dir {str(target)!r}: {str(target)!r} is an existing file",
    )
    assert not (runs / "samples.png_1").exists()


def test_a_generation_that_fails_midway_removes_its_empty_folder(runs, monkeypatch):
    def broken_decode(*args, **kwargs):
        raise RuntimeError("simulated failure while decoding")

    ae, latent = tiny_configs(runs)
    monkeypatch.setattr("infdiff.pipeline.generation.SampleSource.batch", broken_decode)
    with pytest.raises(RuntimeError, match="simulated failure"):
        generate_samples(latent, ae, num_samples=2, sampling_steps=2, out_dir=runs / "out")
    assert not (runs / "out").exists()


def test_partial_checkpoint_files_of_a_killed_write_are_removed_on_resume(runs, capsys):
    checkpoints = runs / "shapes_32" / "checkpoints"
    partial = checkpoints / ".checkpoint-00000009.pt.999999999.0badc0de.tmp"
    partial.write_bytes(b"PK" + bytes(1000))
    ae, _ = tiny_configs(runs)
    train_autoencoder(ae)
    assert not partial.exists()
    assert "removed 1 partial checkpoint file(s)" in capsys.readouterr().out


# -- item 8: a second Ctrl-C stops at once with one line ------------------------------------------------------
def test_a_second_interrupt_stops_at_once_with_one_line(tmp_path):
    """The second SIGINT lands inside a step made long by a large batch, while the first waits for its end."""
    long_steps = ["train.max_steps=100000", "train.batch_size=1024", "data.num_samples=1024"]
    args = flags("config", "shapes_32_config.py", TINY_AE + [f"run.output_dir={tmp_path}", *long_steps])
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "train_inf_ae_diffusion.py"), *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    metrics = tmp_path / "shapes_32" / "metrics.jsonl"
    deadline = time.time() + 120
    while not (metrics.exists() and metrics.read_text().strip()) and time.time() < deadline:
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, error = proc.communicate(timeout=120)
    assert proc.returncode == 130, error
    assert "Traceback" not in error
    assert error.strip().splitlines()[-1] == (
        "train_inf_ae_diffusion.py: second SIGINT: stopping without a checkpoint (the last one written is kept)"
    )
    assert not list((tmp_path / "shapes_32" / "checkpoints").glob(".*.tmp")), "no partial checkpoint is left"


def test_an_interrupt_before_training_starts_ends_with_one_line(capsys, monkeypatch):
    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr("infdiff.pipeline.autoencoder.run_stage", interrupted)
    with pytest.raises(SystemExit) as stopped:
        script("train_inf_ae_diffusion.py").main(flags("config", "shapes_32_config.py", TINY_AE))
    assert stopped.value.code == 130 and capsys.readouterr().err == "train_inf_ae_diffusion.py: interrupted\n"


def test_library_callers_get_the_same_errors(runs):
    ae, latent = tiny_configs(runs)
    with pytest.raises(ConfigError, match=r"--num_samples=0: expected an integer >= 1"):
        generate_samples(latent, ae, num_samples=0)
    ae.train.batch_size = 0
    with pytest.raises(ConfigError, match=r"--config.train.batch_size=0"):
        train_autoencoder(ae)
