"""Default hyper-parameters of the two ∞-Diff stages; the files in ``configs/`` start from these.

Values follow the paper's FFHQ-256 setup (Bond-Taylor & Willcocks 2024, App. / public configs):
batch 32, Adam(0.9, 0.99) at 5e-5, EMA 0.995 every 10 steps, 1000 cosine steps, mollifier
σ = 1 pixel, 1/4 of the pixels per example for the loss (``mc_integral.q_sample``) and a fresh
1/4 for the encoder (``mc_integral.encoder_q_sample``; either set to every pixel runs the dense
path), nf 64, 7×7 kernels, U-Net at half resolution with 128 base channels, mults (1,2,4,8,8),
attention at 16² and 8², dropout 0.1 from 16², z 1024.
The latent DDPM follows DiffAE: MLP 10×2048, constant β = 0.008, L1 loss, AdamW(1e-4, wd 0.04),
batch 256, EMA 0.995 every 10 steps.
Derived sizes (pixels kept, U-Net grid) are field references, so overriding ``data.img_size``
updates them; ``q_sample`` and ``encoder_q_sample`` are set independently.  Two spatial routes
for ``z`` that the paper does not have are off by default: ``model.encoder_pool_size`` (1: the
global mean) and ``model.decoder_z_grid`` (0: FiLM only).
"""

from __future__ import annotations

from ml_collections import ConfigDict, FieldReference


def _run_section(name: str, experiment: str) -> ConfigDict:
    """Where a run lives (``<output_dir>/<experiment>``), its seed and optional loggers."""
    return ConfigDict(dict(name=name, experiment=experiment, output_dir="runs", seed=0, tensorboard=False,
                           wandb_project=""))


def _train_section(**specific) -> ConfigDict:
    """Loop settings shared by both stages (clip 1.0, EMA 0.995 every 10 steps), plus ``specific``."""
    return ConfigDict(dict(grad_clip=1.0, ema_decay=0.995, ema_update_every=10, log_steps=100,
                           checkpoint_steps=10000, keep_checkpoints=3, **specific))


def _diffusion_section(**specific) -> ConfigDict:
    """A 1000-step DDPM with uniformly sampled training timesteps, plus ``specific``."""
    return ConfigDict(dict(steps=1000, schedule_sampler="uniform", **specific))


def _optimizer_section(learning_rate: float, weight_decay: float) -> ConfigDict:
    """Adam(0.9, 0.99) (AdamW when ``weight_decay > 0``), no warm-up, constant rate (``decay_fraction``: the
    fraction of ``train.max_steps`` at the end over which it falls linearly to zero), exploding-step skipping off,
    ``fused``: one update kernel for all parameters instead of a loop over them (the same update)."""
    return ConfigDict(dict(learning_rate=learning_rate, adam_beta1=0.9, adam_beta2=0.99, weight_decay=weight_decay,
                           warmup_steps=0, decay_fraction=0.0, gradient_skip=False, gradient_skip_threshold=500.0,
                           fused=True))


def autoencoder_config(dataset: str = "ffhq", img_size: int = 256, experiment: str = "ffhq_mollified_256") -> ConfigDict:
    """Stage 1 (diffusion autoencoder) defaults."""
    config = ConfigDict()
    size = FieldReference(img_size)

    config.run = _run_section("infty_diff", experiment)

    config.data = data = ConfigDict()
    data.name = dataset
    data.root_dir = ""
    data.img_size = size
    data.channels = 3
    data.random_flip = True
    data.num_samples = 0
    data.seed = 0
    data.split = "train"
    data.num_workers = 4

    config.train = _train_section(batch_size=32, max_steps=1_000_000, mixed_precision="bf16",
                                  plot_samples_steps=5000, plot_sampling_steps=50, sample_size=8)

    config.model = model = ConfigDict()
    model.nf = 64
    model.time_emb_dim = 256
    model.num_conv_blocks = 3
    model.knn_neighbours = 3
    model.kernel_size = 7
    model.mlp_mult = 2
    model.uno_res = size // 2
    model.uno_base_channels = 128
    model.uno_mults = (1, 2, 4, 8, 8)
    model.uno_blocks_per_level = (2, 2, 2, 2, 2)
    model.uno_attn_resolutions = (16, 8)
    model.uno_dropout_from_resolution = 16
    model.uno_dropout = 0.1
    model.uno_conv_type = "conv"
    model.uno_spectral_modes = 0
    model.uno_num_groups = 32
    model.uno_append_coordinates = False
    model.z_dim = 1024
    model.encoder_pool_size = 1
    model.decoder_z_grid = 0
    model.stochastic_encoding = False
    model.kld_weight = 1e-4

    config.diffusion = _diffusion_section(noise_schedule="cosine", loss_type="mse",
                                          model_mean_type="mollified_epsilon", gaussian_filter_std=1.0,
                                          wiener_inv_snr=0.05)

    config.mc_integral = mc = ConfigDict()
    mc.type = "uniform"
    mc.q_sample = size * size // 4
    mc.encoder_q_sample = size * size // 4

    config.optimizer = _optimizer_section(learning_rate=5e-5, weight_decay=0.0)
    return config


def latent_config(experiment: str = "ffhq_mollified_256_sampler") -> ConfigDict:
    """Stage 2 (latent DDPM over the encoder's z) defaults."""
    config = ConfigDict()

    config.run = _run_section("infty_diff_latent", experiment)

    config.data = data = ConfigDict()
    data.test_fraction = 0.05
    data.encode_batch_size = 64
    data.num_workers = 4

    config.train = _train_section(batch_size=256, max_steps=200_000, mixed_precision="no", eval_steps=1000,
                                  plot_samples_steps=10000, sample_size=16)

    config.model = model = ConfigDict()
    model.hidden = 2048
    model.num_layers = 10
    model.time_emb_dim = 128
    model.dropout = 0.0
    model.skip = True

    config.diffusion = _diffusion_section(noise_schedule="const0.008", loss_type="l1", model_mean_type="epsilon",
                                          sampling_steps=100)

    config.optimizer = _optimizer_section(learning_rate=1e-4, weight_decay=0.04)
    return config
