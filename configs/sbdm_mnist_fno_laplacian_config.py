"""MNIST at 28²: the FNO (14 modes, width 32, 4 Fourier layers) as the score network, the Laplacian
prior ``C = (−Δ)^{−1.1}``, the VP SDE, 200 Euler–Maruyama steps.

The CNO paper's MNIST setting (REFERENCE §2; :mod:`infdiff.pipeline.sbdm_configs`).  Point
``data.root_dir`` at the IDX files; evaluate at 28² and natively at 56² with
``python experiments/test_sbdm.py --checkpoint <run> --upscale 2 --num_samples 1000``.
"""

from infdiff.pipeline.sbdm_configs import sbdm_config


def get_config():
    config = sbdm_config("mnist", 28, network="fno", prior="laplacian")
    config.data.root_dir = "data/mnist"
    return config
