"""Function-space score diffusion on the embedded shapes at 32² (CPU-sized): an FNO score network,
the VP SDE (β 0.1 + 19.9 t) with the Laplacian prior (s = 2), Euler–Maruyama sampling (200 steps).

A starting point for the Multilevel Diffusion / CNO family's runs; its settings are not tuned yet.
"""

from ml_collections import ConfigDict

from infdiff.pipeline.default_configs import cpu_autoencoder_config


def get_config():
    config = cpu_autoencoder_config("shapes", 32, "sbdm_shapes_32")
    config.model = ConfigDict(dict(arch="fno", width=32, modes=12, fourier_layers=4, time_dim=64))
    config.prior = ConfigDict(dict(name="laplacian", s=2.0))
    config.process = ConfigDict(dict(name="vp_sde", beta_min=0.1, beta_max=20.0))
    config.loss = ConfigDict(dict(name="denoising", target="epsilon", pointwise="mse", timesteps="uniform"))
    config.sampler = ConfigDict(dict(name="euler_maruyama", steps=200))
    config.optimizer.update(learning_rate=1e-3, warmup_steps=50, decay_fraction=0.25)
    return config
