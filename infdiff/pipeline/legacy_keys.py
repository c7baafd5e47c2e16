"""The ∞-Diff code's config spellings, mapped to infdiff's keys: the one place they are translated.

infdiff's config sections are the keyword arguments of what they build (``model``: the network,
``process`` / ``prior``: the forward process and its noise, ``loss``, ``sampler``, ``train`` /
``optimizer``: the loop).  The public ∞-Diff configs (samb-t/infty-diff) keep most of these under
``diffusion``, ``mc_integral`` and flat ``model.uno_*`` keys; their command lines keep working
because a key the config does not have is looked up here (``--config.mc_integral.q_sample=4096``
sets ``loss.points``).  A typo in either spelling gets the closest key suggested.

========================================  =====================================
∞-Diff key                                infdiff key
========================================  =====================================
``diffusion.steps``                       ``process.steps``
``diffusion.noise_schedule``              ``process.schedule``
``diffusion.gaussian_filter_std``         ``prior.std`` (0: no mollifier)
``diffusion.wiener_inv_snr``              ``prior.inv_snr``
``diffusion.model_mean_type``             ``loss.target``
``diffusion.loss_type``                   ``loss.pointwise``
``diffusion.schedule_sampler``            ``loss.timesteps``
``diffusion.sampling_steps``              ``sampler.steps`` (latent configs)
``mc_integral.type``                      ``loss.subset``
``mc_integral.q_sample``                  ``loss.points``
``mc_integral.encoder_q_sample``          ``loss.encoder_points``
``model.kld_weight``                      ``loss.kl_weight``
``model.time_emb_dim``                    ``model.time_dim``
``model.stochastic_encoding``             ``model.stochastic``
``model.uno_base_channels``               ``model.uno.base_channels``
``model.uno_mults``                       ``model.uno.channel_mults``
``model.uno_blocks_per_level``            ``model.uno.blocks_per_level``
``model.uno_attn_resolutions``            ``model.uno.attn_resolutions``
``model.uno_dropout``                     ``model.uno.dropout``
``model.uno_dropout_from_resolution``     ``model.uno.dropout_from_resolution``
``model.uno_conv_type``                   ``model.uno.conv_type``
``model.uno_spectral_modes``              ``model.uno.spectral_modes``
``model.uno_num_groups``                  ``model.uno.num_groups``
``model.uno_append_coordinates``          ``model.uno.append_coordinates``
``train.plot_sampling_steps``             ``sampler.steps`` (stage-1 configs)
========================================  =====================================

``model.backend`` (the sparse-kernel switch: ``auto``, ``cuda``, ``cpp``, ``torch``) is spelled as in
∞-Diff and needs no mapping.
"""

from __future__ import annotations

from typing import Dict

LEGACY_KEYS: Dict[str, str] = {
    "diffusion.steps": "process.steps",
    "diffusion.noise_schedule": "process.schedule",
    "diffusion.gaussian_filter_std": "prior.std",
    "diffusion.wiener_inv_snr": "prior.inv_snr",
    "diffusion.model_mean_type": "loss.target",
    "diffusion.loss_type": "loss.pointwise",
    "diffusion.schedule_sampler": "loss.timesteps",
    "diffusion.sampling_steps": "sampler.steps",
    "mc_integral.type": "loss.subset",
    "mc_integral.q_sample": "loss.points",
    "mc_integral.encoder_q_sample": "loss.encoder_points",
    "model.kld_weight": "loss.kl_weight",
    "model.time_emb_dim": "model.time_dim",
    "model.stochastic_encoding": "model.stochastic",
    **{
        f"model.uno_{name}": f"model.uno.{name}"
        for name in (
            "base_channels",
            "blocks_per_level",
            "attn_resolutions",
            "dropout",
            "dropout_from_resolution",
            "conv_type",
            "spectral_modes",
            "num_groups",
            "append_coordinates",
        )
    },
    "model.uno_mults": "model.uno.channel_mults",
    "train.plot_sampling_steps": "sampler.steps",
}
