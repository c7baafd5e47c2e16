"""Train a function-space score-based diffusion model (infdiff.sbdm) on the shared training loop.

    python experiments/train_sbdm.py --config configs/sbdm_shapes_config.py [--config.a.b=v ...]

Re-running the same command resumes from the newest checkpoint of the experiment.
"""

from infdiff.pipeline.cli import one_line_errors, parse_command_line, say_once
from infdiff.pipeline.sbdm import train_score_model


def main(argv=None):
    configs, _ = parse_command_line(__doc__, ["config"], argv=argv)
    with one_line_errors("train_sbdm.py"):
        run_dir = train_score_model(configs["config"])
    say_once(f"score model run: {run_dir}")


if __name__ == "__main__":
    main()
