"""Latent DDPM for the churches autoencoder (pass its config as --decoder_config)."""

from infdiff.pipeline.default_configs import latent_config


def get_config():
    config = latent_config(experiment="church_mollified_256_sampler")
    config.model.num_layers = 20  # the ∞-Diff code's Church latent MLP is twice as deep as the others
    return config
