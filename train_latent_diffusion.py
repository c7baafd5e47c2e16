"""Stage 2: train the latent DDPM over the codes of a trained stage-1 autoencoder.

    python train_latent_diffusion.py --config configs/ffhq_latent_config.py \
        --config.run.experiment=ffhq_mollified_256_sampler \
        --decoder_config configs/ffhq_256_config.py --decoder_config.run.experiment=ffhq_mollified_256

The stage-1 run is found by experiment name and its saved config is used (the ``--decoder_config``
file only locates it; overrides of what the weights were trained with are refused).  The data set
is encoded once (cached in the run directory, refreshed when the encoder checkpoint changes).
Re-running the same command resumes.
"""

from infdiff.pipeline.cli import STAGE_SCRIPTS, one_line_errors, parse_command_line, say_once
from infdiff.pipeline.latent import train_latent


def main(argv=None):
    configs, _ = parse_command_line(
        __doc__, ["config", "decoder_config"], argv=argv, trained={"decoder_config": STAGE_SCRIPTS["stage1"]}
    )
    with one_line_errors("train_latent_diffusion.py"):
        run_dir = train_latent(configs["config"], configs["decoder_config"])
    say_once(f"stage 2 run: {run_dir}")


if __name__ == "__main__":
    main()
