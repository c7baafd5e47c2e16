"""MNIST at 28²: the DDPM U-Net (base 32, mults 1-2-2, grid convolutions;
``--config.model.uno.conv_type=conv`` for pixel stencils) as the score network, white noise (the
standard prior), the VP SDE, 200 Euler–Maruyama steps.

The CNO paper's MNIST setting (REFERENCE §2; :mod:`infdiff.pipeline.sbdm_configs`).  Point
``data.root_dir`` at the IDX files; evaluate at 28² and natively at 56² with
``python experiments/test_sbdm.py --checkpoint <run> --upscale 2 --num_samples 1000``.
"""

from infdiff.pipeline.sbdm_configs import sbdm_config


def get_config():
    config = sbdm_config("mnist", 28, network="unet", prior="standard")
    config.data.root_dir = "data/mnist"
    return config
