"""README's "Train on your own data", step by step, on a small digit set in MNIST's IDX format (made here)."""

import gzip
import json
import struct

import numpy as np
import pytest
from PIL import Image

from infdiff.pipeline.autoencoder import build_autoencoder
from infdiff.train.config import ConfigError
from test_pipeline import ROOT, script

TINY = [
    "train.batch_size=4",
    "train.max_steps=4",
    "train.log_steps=2",
    "train.plot_samples_steps=4",
    "train.checkpoint_steps=4",
    "train.sample_size=2",
    "sampler.steps=2",
    "model.nf=8",
    "model.time_dim=16",
    "model.uno.base_channels=8",
    "model.uno.num_groups=4",
    "model.z_dim=8",
]
TINY_LATENT = [
    "train.batch_size=8",
    "train.max_steps=2",
    "train.log_steps=1",
    "train.eval_steps=2",
    "train.plot_samples_steps=2",
    "train.checkpoint_steps=2",
    "train.sample_size=2",
    "model.hidden=16",
    "model.num_layers=2",
    "sampler.steps=2",
    "data.test_fraction=0.25",
]


def write_digits(path, count, seed):
    """``count`` 28×28 images of strokes in an IDX3 file, gzipped as MNIST is distributed."""
    rng = np.random.default_rng(seed)
    images = np.zeros((count, 28, 28), np.uint8)
    for image in images:
        row, col = rng.integers(6, 22, 2)
        image[row - 5 : row + 5, col - 1 : col + 2] = 255
    with gzip.open(path, "wb") as stream:
        stream.write(struct.pack(">4I", 0x803, count, 28, 28) + images.tobytes())


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    root = tmp_path_factory.mktemp("mnist")
    write_digits(root / "train-images-idx3-ubyte.gz", 32, 0)
    write_digits(root / "t10k-images-idx3-ubyte.gz", 8, 1)
    return root


def config_flags(name, file, overrides):
    return [f"--{name}", str(ROOT / "configs" / file)] + [f"--{name}.{o}" for o in overrides]


def test_the_shapes_recipe_at_28_says_which_sizes_work_before_training(tmp_path, digits):
    from infdiff.pipeline.cli import parse_command_line

    configs, _ = parse_command_line(
        "x",
        ["config"],
        argv=config_flags(
            "config",
            "shapes_32_config.py",
            ["data.name=mnist", f"data.root_dir={digits}", "data.img_size=28", "data.random_flip=false"],
        ),
    )
    with pytest.raises(
        ConfigError,
        match=r"model.uno.attn_resolutions=\(8,\): \[8\] never occur; the levels have "
        r"sides \[14, 7\]",
    ):
        build_autoencoder(configs["config"])
    configs["config"].model.uno.attn_resolutions = (7,)
    with pytest.raises(ConfigError, match=r"model.encoder_pool_size=4: must divide the side 7 .*\[1, 7\]"):
        build_autoencoder(configs["config"])


def test_digits_from_idx_files_through_both_stages_and_generation(tmp_path, digits, capsys):
    out = [f"run.output_dir={tmp_path}"]
    script("train_inf_ae_diffusion.py").main(
        config_flags("config", "mnist_28_config.py", TINY + out + [f"data.root_dir={digits}"])
    )
    summary = capsys.readouterr().out
    assert "data: mnist, 32 images of 1×28² (no flips)" in summary
    script("train_latent_diffusion.py").main(
        config_flags("config", "mnist_latent_config.py", TINY_LATENT + out)
        + config_flags("decoder_config", "mnist_28_config.py", out)
    )
    script("experiments/generate_samples.py").main(
        config_flags("config", "mnist_latent_config.py", out)
        + config_flags("decoder_config", "mnist_28_config.py", out)
        + ["--sample_img_size", "56", "--sampling_steps", "2", "--num_samples", "2", "--sampler", "ddpm"]
    )
    samples = tmp_path / "mnist_28_sampler" / "samples_56px_2steps"
    with Image.open(samples / "sample_00001.png") as image:
        assert image.size == (56, 56) and image.mode == "L"
    script("experiments/generate_recons.py").main(
        config_flags("decoder_config", "mnist_28_config.py", out)
        + ["--sizes", "28", "56", "--num_images", "2", "--sampling_steps", "2"]
    )
    recons = json.loads((tmp_path / "mnist_28" / "recons" / "recons.json").read_text())
    assert recons["split"] == "test" and recons["reference"] == "bilinear resampling of the data image"
    assert {"mse_28px", "mse_56px"} <= recons.keys()
