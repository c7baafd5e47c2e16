"""The bad-input battery of ``benchmarks/fault_injection.py``: malformed configs, options and data.

Each :class:`Case` runs one top-level program in a fresh process and says what a clear outcome is:
``"error"`` (a non-zero exit whose last line names ``expect``), ``"warning"`` (the program goes on
and says ``expect``) or ``"either"``.  :func:`classify` sorts what happened into the report's
categories; :func:`make_data` writes the damaged data the cases read.
"""

from __future__ import annotations

import gzip
import shutil
import struct
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import List, Tuple

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
STAGE1, STAGE2 = "train_inf_ae_diffusion.py", "train_latent_diffusion.py"
GENERATE = "experiments/generate_samples.py"
CLEAR, WARNED = "clear one-line error", "handled with a warning"
SILENT, CRASH, UNCLEAR = "silent acceptance", "crash without a message", "unclear failure"

TINY_STAGE1 = [
    "data.img_size=16",
    "data.num_samples=64",
    "train.batch_size=4",
    "train.max_steps=2",
    "train.log_steps=2",
    "train.plot_samples_steps=2",
    "train.checkpoint_steps=2",
    "train.sample_size=2",
    "sampler.steps=2",
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
TINY_STAGE2 = [
    "train.batch_size=16",
    "train.max_steps=2",
    "train.log_steps=2",
    "train.eval_steps=2",
    "train.plot_samples_steps=2",
    "train.checkpoint_steps=2",
    "train.sample_size=2",
    "model.hidden=16",
    "model.num_layers=2",
    "model.time_dim=8",
    "sampler.steps=2",
    "data.test_fraction=0.25",
]


def config_flags(name: str, file: str, overrides) -> List[str]:
    return ["--" + name, str(ROOT / "configs" / file)] + [f"--{name}.{o}" for o in overrides]


@dataclass(frozen=True)
class Case:
    """One bad input: ``program`` run with ``args``; ``expect`` is what a clear outcome says."""

    name: str
    program: str
    args: Tuple[str, ...]
    expect: str
    outcome: str = "error"  # "error", "warning" or "either"


def stage1(name: str, override: str, expect: str, out: Path, *extra: str, outcome: str = "error") -> Case:
    """Stage 1 of the tiny shapes config with ``override`` (and ``extra`` overrides), into ``out``."""
    args = config_flags("config", "shapes_32_config.py", TINY_STAGE1 + [*extra, f"run.output_dir={out}", override])
    return Case(name, STAGE1, tuple(args), expect, outcome)


def stage2(name: str, args: List[str], expect: str, runs: Path) -> Case:
    """Stage 2 of the tiny latent config over the trained stage-1 run in ``runs``, with ``args`` added."""
    base = config_flags("config", "shapes_latent_config.py", TINY_STAGE2 + [f"run.output_dir={runs}"])
    base += config_flags("decoder_config", "shapes_32_config.py", [f"run.output_dir={runs}"])
    return Case(name, STAGE2, tuple(base + args), expect)


def generate(name: str, args: List[str], expect: str, runs: Path, outcome: str = "error") -> Case:
    """``generate_samples.py`` on the trained runs in ``runs`` (2 samples, 2 steps) with ``args`` added."""
    base = config_flags("config", "shapes_latent_config.py", [f"run.output_dir={runs}"])
    base += config_flags("decoder_config", "shapes_32_config.py", [f"run.output_dir={runs}"])
    base += ["--num_samples", "2", "--batch_size", "2", "--sampling_steps", "2", "--latent_sampling_steps", "2"]
    return Case(name, GENERATE, tuple(base + args), expect, outcome)


CONFIG_VALUES = [  # (override, what the error must name)
    ("train.batch_size=True", "train.batch_size=True"),
    ("train.batch_size=0", "train.batch_size=0"),
    ("train.batch_size=-4", "train.batch_size=-4"),
    ("train.batch_size=100000", "train.batch_size=100000"),
    ("train.batch_size=abc", "train.batch_size='abc'"),
    ("train.max_steps=0", "train.max_steps=0"),
    ("train.checkpoint_steps=0", "train.checkpoint_steps=0"),
    ("train.log_steps=0", "train.log_steps=0"),
    ("train.plot_samples_steps=0", "train.plot_samples_steps=0"),
    ("train.sample_size=0", "train.sample_size=0"),
    ("train.keep_checkpoints=0", "train.keep_checkpoints=0"),
    ("train.ema_decay=1.5", "train.ema_decay=1.5"),
    ("train.ema_update_every=0", "train.ema_update_every=0"),
    ("train.grad_clip=-1.0", "train.grad_clip=-1.0"),
    ("train.mixed_precision=fp8", "train.mixed_precision='fp8'"),
    ("train.batch_sise=4", "did you mean --config.train.batch_size"),
    ("optimizer.learning_rate=0", "optimizer.learning_rate=0.0"),
    ("optimizer.learning_rate=-1e-3", "optimizer.learning_rate=-0.001"),
    ("optimizer.adam_beta1=1.0", "optimizer.adam_beta1=1.0"),
    ("optimizer.weight_decay=-0.1", "optimizer.weight_decay=-0.1"),
    ("optimizer.warmup_steps=-5", "optimizer.warmup_steps=-5"),
    ("optimizer.decay_fraction=1.5", "optimizer.decay_fraction=1.5"),
    ("model.z_dim=0", "model.z_dim=0"),
    ("model.nf=0", "model.nf=0"),
    ("model.uno_mults=(1,'a')", "model.uno.channel_mults=(1, 'a')"),
    ("model.uno.channel_mults=()", "model.uno.channel_mults=()"),
    ("model.kernel_size=0", "model.kernel_size=0"),
    ("model.knn_neighbours=0", "model.knn_neighbours=0"),
    ("model.arch=nope", "model.arch='nope'"),
    ("model.uno.width_layout=nope", "model.uno.width_layout='nope'"),
    ("model.uno.attn_resolutions=(3,)", "model.uno.attn_resolutions"),
    ("model.encoder_pool_size=3", "model.encoder_pool_size"),
    ("data.img_size=0", "data.img_size=0"),
    ("data.img_size=1", "data.img_size=1"),
    ("data.name=nope", "data.name='nope'"),
    ("data.channels=2", "data.channels=2"),
    ("data.num_workers=-1", "data.num_workers=-1"),
    ("data.split=val", "data.split='val'"),
    ("data.radius_range=(0.3,)", "data.radius_range=(0.3,)"),
    ("loss.points=0", "loss.points=0"),
    ("loss.points=100000", "loss.points=100000"),
    ("loss.encoder_points=100000", "loss.encoder_points=100000"),
    ("loss.target=noise", "loss.target='noise'"),
    ("loss.pointwise=l3", "loss.pointwise='l3'"),
    ("loss.kl_weight=-1.0", "loss.kl_weight=-1.0"),
    ("process.steps=0", "process.steps=0"),
    ("process.schedule=nope", "process.schedule"),
    ("prior.std=0", "prior.std=0.0"),
    ("prior.inv_snr=-1.0", "prior.inv_snr=-1.0"),
    ("sampler.steps=0", "sampler.steps=0"),
    ("sampler.name=nope", "sampler.name='nope'"),
    ("run.experiment=", "run.experiment=''"),
    ("run.experiment=a/b", "run.experiment='a/b'"),
    ("run.seed=-1", "run.seed=-1"),
    ("run.output_dir=", "run.output_dir=''"),
]


def write_idx(path: Path, images: np.ndarray) -> None:
    with gzip.open(path, "wb") as stream:
        stream.write(struct.pack(">4I", 0x803, *images.shape) + images.tobytes())


def make_data(root: Path) -> dict:
    """Damaged and awkward data sets under ``root``; returns their paths by name."""
    rng = np.random.default_rng(0)
    paths = {}
    for name, side in (("small_images", 12), ("images", 24)):
        folder = root / name
        folder.mkdir(parents=True)
        for i in range(40):
            Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(folder / f"{i:02d}.png")
        paths[name] = folder
    corrupt = root / "corrupt_images"
    shutil.copytree(paths["images"], corrupt)
    (corrupt / "07.png").write_bytes(b"\x89PNG not really")
    paths["corrupt_images"] = corrupt
    (root / "empty_folder").mkdir()
    paths["empty_folder"] = root / "empty_folder"
    subprocess.run(
        [sys.executable, "-m", "infdiff.data.prepare", str(paths["images"]), str(root / "db.lmdb"), "--size", "16"],
        check=True,
        capture_output=True,
    )
    data = (root / "db.lmdb" / "data.mdb").read_bytes()
    for label, kept in (("90", 0.9), ("50", 0.5), ("10", 0.1)):
        shutil.copytree(root / "db.lmdb", root / f"db_{label}.lmdb")
        (root / f"db_{label}.lmdb" / "data.mdb").write_bytes(data[: int(len(data) * kept)])
        paths[f"lmdb_{label}"] = root / f"db_{label}.lmdb"
    shutil.copytree(root / "db.lmdb", root / "db_8k.lmdb")
    (root / "db_8k.lmdb" / "data.mdb").write_bytes(data[:8192])
    paths["lmdb_8k"] = root / "db_8k.lmdb"
    damaged = bytearray(data)
    middle = (len(data) // 4096 // 2) * 4096
    damaged[middle : middle + 4096] = rng.integers(0, 256, 4096, dtype=np.uint8).tobytes()
    shutil.copytree(root / "db.lmdb", root / "db_page.lmdb")
    (root / "db_page.lmdb" / "data.mdb").write_bytes(bytes(damaged))
    paths["lmdb_page"] = root / "db_page.lmdb"
    digits = rng.integers(0, 256, (100, 28, 28), dtype=np.uint8)
    for label in ("mnist_truncated", "mnist_magic"):
        (root / label).mkdir()
        write_idx(root / label / "train-images-idx3-ubyte.gz", digits)
        paths[label] = root / label
    gz = root / "mnist_truncated" / "train-images-idx3-ubyte.gz"
    gz.write_bytes(gz.read_bytes()[: gz.stat().st_size // 2])
    with gzip.open(root / "mnist_magic" / "train-images-idx3-ubyte.gz", "wb") as stream:
        stream.write(struct.pack(">4I", 0x801, 100, 28, 28) + digits.tobytes())
    (root / "not_a_folder.png").write_bytes(b"x")
    paths["file"] = root / "not_a_folder.png"
    return paths


def data_cases(data: dict, out: Path) -> List[Case]:
    """Stage 1 on each damaged data set (ten steps of four: every one of the 40 images is read once), each
    run in a folder of its own: what the error or warning must name."""

    def on(name, dataset, key, expect, outcome="error"):
        extra = (f"data.name={dataset}", "train.max_steps=10", "data.num_workers=0")
        return stage1(name, f"data.root_dir={data[key]}", expect, out / key, *extra, outcome=outcome)

    return [
        *(on(f"LMDB truncated to {k}", "lmdb", f"lmdb_{k}", str(data[f"lmdb_{k}"])) for k in ("90", "50", "10", "8k")),
        on("LMDB with a 4 KiB page overwritten", "lmdb", "lmdb_page", str(data["lmdb_page"]), "either"),
        stage1(
            "LMDB path that does not exist",
            "data.root_dir=/nonexistent",
            "data.root_dir",
            out / "none",
            "data.name=lmdb",
        ),
        on("MNIST .gz cut in half", "mnist", "mnist_truncated", "train-images-idx3-ubyte.gz"),
        on("MNIST file with a labels magic", "mnist", "mnist_magic", "train-images-idx3-ubyte.gz"),
        on("images smaller than img_size", "image_folder", "small_images", "smaller than 16 px", "warning"),
        on("a corrupt image among good ones", "image_folder", "corrupt_images", "07.png", "warning"),
        on("an image folder without images", "image_folder", "empty_folder", str(data["empty_folder"])),
        on("root_dir that is a file", "image_folder", "file", "data.root_dir"),
    ]


def classify(case: Case, status: int, output: str) -> str:
    """The report category of one run: its exit ``status`` and everything it printed."""
    lines = [line for line in output.strip().splitlines() if line.strip()]
    last = lines[-1] if lines else ""
    if status < 0:
        return CRASH  # killed by a signal (SIGBUS, SIGSEGV, ...)
    if status == 0:
        return WARNED if case.outcome in ("warning", "either") and case.expect in output else SILENT
    if not lines:
        return CRASH
    if "Traceback" in output or case.outcome == "warning":
        return UNCLEAR
    return CLEAR if case.expect in last else UNCLEAR
