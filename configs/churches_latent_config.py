"""Latent DDPM for the churches autoencoder (pass its config as --decoder_config)."""

from infdiff.pipeline.default_configs import latent_config


def get_config():
    return latent_config(experiment="church_mollified_256_sampler")
