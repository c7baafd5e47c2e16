"""FFHQ 128²: smaller U-Net (64 base channels, 4 levels), z of 256, batch 16, lr 1e-4."""

from infdiff.pipeline.default_configs import autoencoder_config


def get_config():
    config = autoencoder_config(dataset="ffhq", img_size=128, experiment="ffhq_mollified_128")
    config.train.batch_size = 16
    config.train.sample_size = 16
    config.model.uno.base_channels = 64
    config.model.uno.channel_mults = (1, 2, 4, 8)
    config.model.uno.blocks_per_level = (2, 2, 2, 2)
    config.model.z_dim = 256
    config.optimizer.learning_rate = 1e-4
    return config
