"""The configs of the function-space score-diffusion family (:mod:`infdiff.sbdm`): one builder, a score
network and a prior by name.

The settings follow Multilevel Diffusion and its CNO fork (Hagemann et al. 2023; REFERENCE §2): the
VP SDE with ``β(t) = 0.1 + 19.9 t``, the preconditioned denoising loss (target ``η = Q z``), uniform
times, Euler–Maruyama with 200 steps; the FNO with 14 modes and width 32.  Their Laplacian prior is
``Q ∝ (−Δ)^{−0.55}``, i.e. ``C = (−Δ)^{−1.1}`` (``s = 1.1``, just trace class), discretised here so
that it is the same random field at every resolution (:mod:`infdiff.diffusion.spectral_priors`).
The training schedule is :func:`~infdiff.pipeline.default_configs.cpu_autoencoder_config`'s
(batch 16, 2000 steps, EMA 0.99), which a GPU run raises with ``--config.train.*``.
"""

from __future__ import annotations

from ml_collections import ConfigDict

from infdiff.pipeline.default_configs import cpu_autoencoder_config

SCORE_NETWORKS = {
    "fno": dict(arch="fno", width=32, modes=14, fourier_layers=4, time_dim=64),
    "cno": dict(arch="cno", width=32, levels=2, res_blocks=1, neck_blocks=2, time_dim=64, num_groups=8),
    "unet": dict(
        arch="unet",
        time_dim=64,
        uno=dict(base_channels=32, channel_mults=(1, 2, 2), blocks_per_level=2, num_groups=8, conv_type="grid_conv"),
    ),
}
SCORE_PRIORS = {
    "standard": dict(name="white"),
    "laplacian": dict(name="laplacian", s=1.1),
    "bessel": dict(name="bessel", s=1.1, tau=8.0),
    "fno": dict(name="fno", modes=14, seed=0),
    "combined": dict(name="combined", s=1.1, modes=14, seed=0, weight=1.0),
}


def sbdm_config(dataset: str, img_size: int, network: str, prior: str, experiment: str = "") -> ConfigDict:
    """A score-diffusion config: ``network`` of :data:`SCORE_NETWORKS`, ``prior`` of :data:`SCORE_PRIORS`
    (experiment name ``sbdm_<dataset>_<size>_<network>_<prior>`` unless given)."""
    for key, value, table in (("network", network, SCORE_NETWORKS), ("prior", prior, SCORE_PRIORS)):
        if value not in table:
            raise ValueError(f"{key}={value!r}: expected one of {sorted(table)}")
    config = cpu_autoencoder_config(dataset, img_size, experiment or f"sbdm_{dataset}_{img_size}_{network}_{prior}")
    config.model = ConfigDict(SCORE_NETWORKS[network])
    config.prior = ConfigDict(SCORE_PRIORS[prior])
    config.process = ConfigDict(dict(name="vp_sde", beta_min=0.1, beta_max=20.0))
    config.loss = ConfigDict(dict(name="denoising", target="epsilon", pointwise="mse", timesteps="uniform"))
    config.sampler = ConfigDict(dict(name="euler_maruyama", steps=200))
    config.optimizer.update(learning_rate=1e-3, warmup_steps=50, decay_fraction=0.25)
    return config
