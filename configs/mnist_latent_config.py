"""Latent DDPM for the digits autoencoder of ``configs/mnist_28_config.py`` (the demo's CPU-sized stage 2)."""

from infdiff.pipeline.default_configs import cpu_latent_config


def get_config():
    return cpu_latent_config(experiment="mnist_28_sampler")
