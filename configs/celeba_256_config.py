"""CelebA-HQ 256² (an image folder of CelebA-HQ at data.root_dir)."""

from infdiff.pipeline.default_configs import autoencoder_config


def get_config():
    return autoencoder_config(dataset="celeba", img_size=256, experiment="celeba_mollified_256")
