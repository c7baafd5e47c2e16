"""Latent DDPM for the ffhq autoencoder (pass its config as --decoder_config)."""

from infdiff.pipeline.default_configs import latent_config


def get_config():
    return latent_config(experiment="ffhq_mollified_256_sampler")
