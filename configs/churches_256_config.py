"""LSUN Church 256² (the LSUN LMDB ``church_outdoor_train_lmdb`` at data.root_dir)."""

from infdiff.pipeline.default_configs import autoencoder_config


def get_config():
    return autoencoder_config(dataset="churches", img_size=256, experiment="church_mollified_256")
