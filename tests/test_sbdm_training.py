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
