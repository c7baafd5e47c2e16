"""calculate_fid.py and the paper's sampling protocol: settings recorded, folders scored alike, processes agree."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from infdiff.pipeline.autoencoder import build_autoencoder, train_autoencoder
from infdiff.pipeline.cli import parse_command_line
from infdiff.pipeline.latent import split_latents, train_latent
from infdiff.train.config import load_config_file
from test_pipeline import ROOT, flags, script, tiny_configs

CONFIGS = ROOT / "configs"
SAMPLING = [
    "--num_samples",
    "6",
    "--batch_size",
    "2",
    "--sampling_steps",
    "2",
    "--latent_sampling_steps",
    "3",
    "--extractor",
    "random",
    "--reference_count",
    "20",
]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    ae, latent = tiny_configs(out)
    train_autoencoder(ae)
    train_latent(latent, ae)
    return out


def run_flags(out):
    return flags("config", "shapes_latent_config.py", [f"run.output_dir={out}"]) + flags(
        "decoder_config", "shapes_32_config.py", [f"run.output_dir={out}"]
    )


def test_calculate_fid_writes_every_setting_beside_its_samples_and_caches_the_reference(runs, capsys):
    script("experiments/calculate_fid.py").main(run_flags(runs) + SAMPLING + ["--out_dir", str(runs / "fid_a")])
    result = json.loads((runs / "fid_a" / "fid.json").read_text())
    assert result["extractor"] == "random" and "not comparable" in result["extractor_description"]
    assert (result["num_samples"], result["reference"]["count"], result["reference"]["resolution"]) == (6, 20, 16)
    assert (result["sampling_steps"], result["latent_sampling_steps"], result["latent_sampler"]) == (2, 3, "ddim")
    assert result["decoder_step"] == 6 and result["processes"] == 1 and result["fid"] > 0 and result["kid"] is not None
    assert sorted(p.name for p in (runs / "fid_a").glob("sample_*.png")) == [f"sample_{i:05d}.png" for i in range(6)]
    assert "FID" in capsys.readouterr().out
    (cached,) = (runs / "fid_stats").iterdir()
    assert cached.name.startswith("shapes_train_16px_random_20_")


def test_a_folder_of_the_same_samples_scores_the_same(runs):
    """Extractors see 8-bit pictures, so the saved PNGs score exactly as the samples they were saved from."""
    if not (runs / "fid_a" / "fid.json").exists():
        script("experiments/calculate_fid.py").main(run_flags(runs) + SAMPLING + ["--out_dir", str(runs / "fid_a")])
    folder = runs / "folder"
    shutil.copytree(runs / "fid_a", folder, ignore=shutil.ignore_patterns("fid.json"))
    script("experiments/calculate_fid.py").main(
        flags("decoder_config", "shapes_32_config.py", [f"run.output_dir={runs}"])
        + ["--samples_dir", str(folder), "--extractor", "random", "--reference_count", "20"]
    )
    generated = json.loads((runs / "fid_a" / "fid.json").read_text())
    scored = json.loads((folder / "fid.json").read_text())
    assert scored["fid"] == pytest.approx(generated["fid"], rel=1e-9) and scored["num_samples"] == 6


def test_two_processes_sample_and_score_as_one(runs, tmp_path):
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")
    if not Path(torchrun).exists():
        pytest.skip("torchrun not installed")
    env = dict(
        os.environ,
        OMP_NUM_THREADS="1",
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    )

    def launch(program, arguments, out, processes):
        prefix = (
            [sys.executable]
            if processes == 1
            else [torchrun, "--nproc_per_node", "2", "--master_port", str(29519 + len(out.name))]
        )
        command = [*prefix, str(ROOT / "experiments" / program), *run_flags(runs), *arguments, "--out_dir", str(out)]
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stdout + done.stderr

    def same_samples(a, b):
        return all(
            (a / f"sample_{i:05d}.png").read_bytes() == (b / f"sample_{i:05d}.png").read_bytes() for i in range(6)
        )

    scoring = SAMPLING + ["--cache_dir", str(tmp_path / "stats")]
    launch("calculate_fid.py", scoring, tmp_path / "one", 1)
    launch("calculate_fid.py", scoring, tmp_path / "two", 2)
    a, b = (json.loads((tmp_path / name / "fid.json").read_text()) for name in ("one", "two"))
    assert (a["processes"], b["processes"]) == (1, 2)
    assert a["fid"] == b["fid"] and a["kid"] == b["kid"]
    assert same_samples(tmp_path / "one", tmp_path / "two")
    launch("generate_samples.py", SAMPLING[:8], tmp_path / "generated", 2)
    assert json.loads((tmp_path / "generated" / "samples.json").read_text())["processes"] == 2
    assert same_samples(tmp_path / "generated", tmp_path / "one") and (tmp_path / "generated" / "grid.png").exists()


def test_a_missing_extractor_is_a_one_line_error(runs, monkeypatch, capsys):
    monkeypatch.setattr("infdiff.metrics.inception.importlib.util.find_spec", lambda name: None)
    with pytest.raises(SystemExit) as stopped:
        script("experiments/calculate_fid.py").main(run_flags(runs) + ["--extractor", "inception"])
    assert stopped.value.code == 2 and "pip install -e '.[metrics]'" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["ffhq", "celeba", "churches"])
def test_the_paper_latent_configs_sample_latents_by_ancestral_ddpm_over_all_steps(name):
    config = load_config_file(CONFIGS / f"{name}_latent_config.py")
    assert config.sampler.to_dict() == {"name": "ddpm", "steps": 1000, "variance": "fixed_large"}
    assert config.data.flip_latents is True
    assert config.model.num_layers == (20 if name == "churches" else 10)


def test_the_paper_configs_lay_the_u_net_out_as_the_infty_diff_code():
    """Contracting widths 128, 128, 256, 512, 1024 (ours would be 128, 256, 512, 1024, 1024): ~320 M decoder."""
    config = parse_command_line("x", ["config"], argv=["--config", str(CONFIGS / "ffhq_256_config.py")])[0]["config"]
    with torch.device("meta"):
        model = build_autoencoder(config)
    levels = model.decoder.uno.contracting.levels
    assert [level.down_channels for level in levels] == [128, 128, 256, 512, 1024]
    assert [level.channels for level in levels] == [128, 256, 512, 1024, 1024]
    decoder = sum(p.numel() for p in model.decoder.parameters())
    assert decoder == pytest.approx(317.5e6, rel=0.005)
    demo = load_config_file(CONFIGS / "shapes_32_config.py")
    assert demo.model.uno.width_layout == "per_level"


def test_stage_two_learns_mirrored_codes_when_stage_one_flips(tmp_path):
    ae, latent = tiny_configs(tmp_path, "data.random_flip=true")
    latent.data.flip_latents = True
    train_autoencoder(ae)
    train_latent(latent, ae)
    assert json.loads((tmp_path / "shapes_32_sampler" / "latents.json").read_text()) == {
        "train": 96,
        "test": 32,
        "z_dim": 8,
    }
    codes = torch.load(tmp_path / "shapes_32_sampler" / "latents.pt", weights_only=True)
    assert codes["identity"]["mirrored"] is True and codes["latents"].shape == (128, 8)
    assert not torch.allclose(codes["latents"][:64], codes["latents"][64:])
    train, test = split_latents(torch.arange(10.0).view(10, 1), 0.2, 0, mirrored=True)
    assert sorted(set(test.flatten().long().tolist()) & set(range(5))) == sorted(
        t - 5 for t in test.flatten().long().tolist() if t >= 5
    ), "an image and its mirror stay together"


def test_the_decoders_ddpm_sampler_takes_either_posterior_variance(runs):
    for variance in ("fixed_small", "fixed_large"):
        script("experiments/generate_samples.py").main(
            run_flags(runs)
            + [
                "--num_samples",
                "2",
                "--sampling_steps",
                "3",
                "--sampler",
                "ddpm",
                "--variance",
                variance,
                "--out_dir",
                str(runs / variance),
            ]
        )
    small, large = (json.loads((runs / v / "samples.json").read_text()) for v in ("fixed_small", "fixed_large"))
    assert small["sampler_options"] == {"variance": "fixed_small"} and large["sampler_options"] == {
        "variance": "fixed_large"
    }
    assert (runs / "fixed_small" / "sample_00000.png").read_bytes() != (
        runs / "fixed_large" / "sample_00000.png"
    ).read_bytes()
    with pytest.raises(SystemExit):
        script("experiments/generate_samples.py").main(
            run_flags(runs) + ["--sampler", "ddim", "--variance", "fixed_large"]
        )


def test_the_resolution_sweep_scores_every_method_at_every_size(runs, tmp_path):
    script("benchmarks/resolution_sweep.py").main(
        run_flags(runs)
        + [
            "--factors",
            "0.5",
            "1",
            "2",
            "--num_samples",
            "6",
            "--sampling_steps",
            "2",
            "--extractor",
            "random",
            "--kid_subsets",
            "3",
            "--out_dir",
            str(tmp_path),
        ]
    )
    result = json.loads((tmp_path / "resolution_sweep.json").read_text())
    assert list(result["cells"]) == ["8", "16", "32"] and result["settings"]["num_samples"] == 6
    for size, cells in result["cells"].items():
        assert list(cells) == ["native", "upsampled samples", "upsampled data", "data"]
        assert all(cell["resolution"] == [int(size)] * 2 and cell["count"] == 6 for cell in cells.values())
    at_train = result["cells"]["16"]
    assert at_train["native"]["kid"] == at_train["upsampled samples"]["kid"], "at R both are the samples themselves"
    table = (tmp_path / "resolution_sweep.md").read_text()
    assert "N = 6 per cell" in table and "extractor `random`" in table and table.count("| 32² |") == 4
    assert (tmp_path / "resolution_sweep.png").stat().st_size > 10_000
