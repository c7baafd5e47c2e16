"""MNIST or Fashion-MNIST at their native 28², grey-scale: the demo's CPU-sized autoencoder on digits.

Point ``data.root_dir`` at a folder holding the IDX files as distributed
(``train-images-idx3-ubyte[.gz]``, and ``t10k-images-idx3-ubyte[.gz]`` for the held-out split that
reconstructions use); ``--config.data.name=fashion_mnist`` reads Fashion-MNIST.  The data set gives
one channel and no random flips (digits are not mirror-symmetric).  At 28² the U-Net's levels are
14² and 7², so attention runs at 7² and the encoder pools over the whole 7² bottleneck (the
demo's 4² pooling does not divide 7).  The recipe is the demo's (``configs/shapes_32_config.py``
says what each choice measured on shapes); nothing here was measured on digits: no data set is
downloaded by infdiff.
"""

from infdiff.pipeline.default_configs import cpu_autoencoder_config


def get_config():
    config = cpu_autoencoder_config(dataset="mnist", img_size=28, experiment="mnist_28")
    config.data.root_dir = "data/mnist"
    config.model.uno.attn_resolutions = (7,)
    config.model.encoder_pool_size = 7
    config.model.decoder_z_grid = 7
    return config
