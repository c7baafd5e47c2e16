"""MNIST at 28² for the score-diffusion family, one file for every network and prior:

    python experiments/train_sbdm.py --config configs/sbdm_mnist_config.py:NETWORK,PRIOR

with ``NETWORK`` one of ``fno`` (14 modes, width 32), ``cno`` (width 32, 2 levels, alias-free
activations) or ``unet`` (DDPM's U-Net on grid convolutions; ``--config.model.uno.conv_type=conv``
for pixel stencils), and ``PRIOR`` one of ``standard`` (white noise), ``laplacian`` (``C = (−Δ)^{−1.1}``),
``bessel``, ``fno`` or ``combined`` (default ``fno,standard``; experiment ``sbdm_mnist_28_NETWORK_PRIOR``).
The CNO paper's MNIST settings (REFERENCE §2; :mod:`infdiff.pipeline.sbdm_configs`): the VP SDE and
200 Euler–Maruyama steps.  Point ``data.root_dir`` at the IDX files; evaluate at 28² and natively at
56² with ``python experiments/test_sbdm.py --checkpoint runs/sbdm_mnist_28_NETWORK_PRIOR --upscale 2``
(1000 samples by default).
"""

from infdiff.pipeline.sbdm_configs import sbdm_config


def get_config(variant: str = "fno,standard"):
    network, _, prior = variant.partition(",")
    config = sbdm_config("mnist", 28, network=network, prior=prior or "standard")
    config.data.root_dir = "data/mnist"
    return config
