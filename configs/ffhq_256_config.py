"""FFHQ 256²: the paper's main setting (an image folder or LMDB of FFHQ at data.root_dir)."""

from infdiff.pipeline.default_configs import autoencoder_config


def get_config():
    return autoencoder_config(dataset="ffhq", img_size=256, experiment="ffhq_mollified_256")
