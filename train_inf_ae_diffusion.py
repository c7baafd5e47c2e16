"""Stage 1: train the ∞-Diff diffusion autoencoder on random coordinate subsets.

    python train_inf_ae_diffusion.py --config configs/ffhq_256_config.py --config.run.experiment=ffhq_mollified_256

Re-running the same command resumes from the newest checkpoint of the experiment.  For several
GPUs: ``accelerate launch train_inf_ae_diffusion.py ...`` (or ``torchrun --nproc_per_node N``).
"""

from infdiff.pipeline.autoencoder import train_autoencoder
from infdiff.pipeline.cli import one_line_errors, parse_command_line, say_once


def main(argv=None):
    configs, _ = parse_command_line(__doc__, ["config"], argv=argv)
    with one_line_errors("train_inf_ae_diffusion.py"):
        run_dir = train_autoencoder(configs["config"])
    say_once(f"stage 1 run: {run_dir}")


if __name__ == "__main__":
    main()
