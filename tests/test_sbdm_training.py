"""Score models train on the shared loop: a run stopped and resumed ends bitwise where an unbroken one does,
and its samples are drawn natively at twice the training size."""

import json

from test_pipeline import assert_same_final_state, flags, script

TINY = [
    "data.img_size=16",
    "data.num_samples=16",
    "train.batch_size=4",
    "train.log_steps=2",
    "train.checkpoint_steps=2",
    "train.plot_samples_steps=4",
    "train.sample_size=1",
    "sampler.steps=3",
    "model.width=8",
    "model.modes=4",
    "model.fourier_layers=2",
    "model.time_dim=16",
]


def train(out, steps, experiment):
    overrides = TINY + [f"run.output_dir={out}", f"train.max_steps={steps}", f"run.experiment={experiment}"]
    script("experiments/train_sbdm.py").main(flags("config", "sbdm_shapes_config.py", overrides))


def test_a_resumed_score_model_run_is_bitwise_the_unbroken_one(tmp_path):
    train(tmp_path, 4, "unbroken")
    train(tmp_path, 2, "resumed")
    train(tmp_path, 4, "resumed")
    assert_same_final_state(tmp_path / "unbroken", tmp_path / "resumed", 4)
    samples = json.loads((tmp_path / "unbroken" / "samples" / "samples_00000004.json").read_text())
    assert {"sample_std_1x", "sample_std_2x"} <= set(samples)
    assert (tmp_path / "unbroken" / "samples" / "samples_00000004.png").exists()


def test_a_warm_started_run_begins_from_the_coarse_run_weights(tmp_path, capsys):
    """Coarse-to-fine: a run at 16² continues at 24² from its EMA weights (the FNO is resolution-free)."""
    import pytest
    import torch

    from infdiff.io import torch_load

    train(tmp_path, 2, "coarse")
    coarse = torch_load(tmp_path / "coarse" / "checkpoints" / "checkpoint-00000002.pt")["ema"]["model"]
    fine = ["data.img_size=24", f"run.warm_start={tmp_path / 'coarse'}"]
    overrides = TINY + fine + [f"run.output_dir={tmp_path}", "train.max_steps=1", "run.experiment=fine"]
    overrides += ["optimizer.learning_rate=1e-12", "optimizer.warmup_steps=0"]
    script("experiments/train_sbdm.py").main(flags("config", "sbdm_shapes_config.py", overrides))
    assert "warm start: " in capsys.readouterr().out
    state = torch_load(tmp_path / "fine" / "checkpoints" / "checkpoint-00000001.pt")
    for name, weight in coarse.items():
        torch.testing.assert_close(state["model"][name], weight, atol=1e-6, rtol=0)
    wider = overrides + ["model.width=12", "run.experiment=wider"]
    with pytest.raises(SystemExit):
        script("experiments/train_sbdm.py").main(flags("config", "sbdm_shapes_config.py", wider))
    error = capsys.readouterr().err
    assert f"--config.run.warm_start={tmp_path / 'coarse'}: the weights of" in error and "do not fit" in error
