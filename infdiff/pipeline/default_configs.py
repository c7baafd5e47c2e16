"""Default hyper-parameters of the two ∞-Diff stages; the files in ``configs/`` start from these.

Each section is the keyword arguments of what it builds, plus the registry name of that thing:
``data`` (``name``: :data:`infdiff.data.DATASETS`, and the loader's ``random_flip``,
``num_workers``), ``model`` (``arch``: :data:`infdiff.nn.ARCHS`), ``prior``
(:data:`infdiff.diffusion.PRIORS`), ``process`` (:data:`infdiff.diffusion.PROCESSES`), ``loss``
(:data:`infdiff.diffusion.LOSSES`), ``sampler`` (:data:`infdiff.diffusion.SAMPLERS`; pictures
during training, and stage 2's latent sampler), ``train`` / ``optimizer``
(:class:`~infdiff.train.settings.TrainSettings`, :class:`~infdiff.train.settings.OptimizerSettings`)
and ``run`` (where the run lives, its seed, loggers).  The ∞-Diff code's spellings of these keys
work too (:mod:`infdiff.pipeline.legacy_keys`).

Values follow the paper's FFHQ-256 setup (Bond-Taylor & Willcocks 2024, App. / public configs):
batch 32, Adam(0.9, 0.99) at 5e-5, EMA 0.995 every 10 steps, 1000 cosine steps, mollifier
σ = 1 pixel, 1/4 of the pixels per example for the loss (``loss.points``) and a fresh 1/4 for
the encoder (``loss.encoder_points``; either set to every pixel runs the dense path), nf 64,
7×7 kernels, U-Net at half resolution with 128 base channels, mults (1,2,4,8,8) laid out as the
∞-Diff code does (widths 128, 128, 256, 512, 1024, ``model.uno.width_layout="infty_diff"``),
attention at 16² and 8², dropout 0.1 from 16², z 1024.
The latent DDPM follows DiffAE: MLP 10×2048, constant β = 0.008, L1 loss, AdamW(1e-4, wd 0.04),
batch 256, EMA 0.995 every 10 steps; as in the ∞-Diff code its latents are sampled by ancestral
DDPM over all 1000 steps with the fixed-large variance β_t (``sampler``), and its training codes
include those of every image's mirror image when stage 1 flips (``data.flip_latents``).
Derived sizes (pixels kept, U-Net grid) are field references, so overriding ``data.img_size``
updates them; ``points`` and ``encoder_points`` are set independently.  Two spatial routes
for ``z`` that the paper does not have are off by default: ``model.encoder_pool_size`` (1: the
global mean) and ``model.decoder_z_grid`` (0: FiLM only).  ``data`` holds the keys of its data set;
``data.channels`` and ``data.random_flip`` are ``None``: the data set's own (3 channels and flips
for photos, no flips for shapes and digits, 1 channel for digits).
"""

from __future__ import annotations

from ml_collections import ConfigDict, FieldReference

from infdiff.data import dataset_entry
from infdiff.pipeline.runs import DEFAULT_OUTPUT_DIR

# Every data section has these keys (unset: the data set's defaults), so a config can switch data sets;
# the keys only some data sets read are added for those.
_DATA_KEYS = dict(root_dir="", channels=None, split=None, random_flip=None, num_workers=4)
_DATA_SET_KEYS = dict(num_samples=0, seed=0, max_shapes=3, radius_range=(0.12, 0.3))


def _run_section(experiment: str) -> ConfigDict:
    """Where a run lives (``<output_dir>/<experiment>``), its seed, determinism, optional loggers, and the
    run whose weights a fresh run starts from (``warm_start``: coarse-to-fine training)."""
    return ConfigDict(
        dict(
            experiment=experiment,
            output_dir=DEFAULT_OUTPUT_DIR,
            seed=0,
            deterministic=False,
            tensorboard=False,
            wandb_project="",
            warm_start="",
        )
    )


def _data_section(dataset: str, img_size: FieldReference) -> ConfigDict:
    """The keys every data set may read (:mod:`infdiff.data.registry`), unset, and ``dataset``'s own with their
    defaults; flips as the data set prefers, 4 loader workers."""
    keys = dataset_entry({"name": dataset}).keys
    own = {key: value for key, value in _DATA_SET_KEYS.items() if key in keys}
    return ConfigDict(dict(name=dataset, img_size=img_size, **_DATA_KEYS, **own))


def _train_section(**specific) -> ConfigDict:
    """Loop settings shared by both stages (clip 1.0, EMA 0.995 every 10 steps, nothing compiled; when
    compiled, the coarse-grid U-Nets only), plus ``specific``."""
    return ConfigDict(
        dict(
            compile="none",
            compile_scope="grid",
            grad_clip=1.0,
            ema_decay=0.995,
            ema_update_every=10,
            log_steps=100,
            checkpoint_steps=10000,
            keep_checkpoints=3,
            **specific,
        )
    )


def _optimizer_section(learning_rate: float, weight_decay: float) -> ConfigDict:
    """Adam(0.9, 0.99) (AdamW when ``weight_decay > 0``), no warm-up, constant rate (``decay_fraction``: the
    fraction of ``train.max_steps`` at the end over which it falls linearly to zero), exploding-step skipping off,
    ``fused``: one update kernel for all parameters instead of a loop over them (the same update)."""
    return ConfigDict(
        dict(
            learning_rate=learning_rate,
            adam_beta1=0.9,
            adam_beta2=0.99,
            weight_decay=weight_decay,
            warmup_steps=0,
            decay_fraction=0.0,
            gradient_skip=False,
            gradient_skip_threshold=500.0,
            fused=True,
        )
    )


def autoencoder_config(
    dataset: str = "ffhq", img_size: int = 256, experiment: str = "ffhq_mollified_256"
) -> ConfigDict:
    """Stage 1 (diffusion autoencoder) defaults."""
    size = FieldReference(img_size)
    config = ConfigDict()
    config.run = _run_section(experiment)
    config.data = _data_section(dataset, size)
    config.train = _train_section(
        batch_size=32, max_steps=1_000_000, mixed_precision="bf16", plot_samples_steps=5000, sample_size=8
    )
    config.model = ConfigDict(
        dict(
            arch="sparse_autoencoder",
            nf=64,
            time_dim=256,
            num_conv_blocks=3,
            knn_neighbours=3,
            backend="auto",
            neighbours="table",
            kernel_size=7,
            mlp_mult=2,
            uno_res=size // 2,
            z_dim=1024,
            stochastic=False,
            encoder_pool_size=1,
            decoder_z_grid=0,
            uno=ConfigDict(
                dict(
                    base_channels=128,
                    channel_mults=(1, 2, 4, 8, 8),
                    blocks_per_level=(2, 2, 2, 2, 2),
                    attn_resolutions=(16, 8),
                    dropout=0.1,
                    dropout_from_resolution=16,
                    conv_type="conv",
                    spectral_modes=None,
                    num_groups=32,
                    append_coordinates=None,
                    width_layout="infty_diff",
                )
            ),
        )
    )
    config.prior = ConfigDict(dict(name="mollifier", std=1.0, inv_snr=0.05))
    config.process = ConfigDict(dict(name="ddpm", schedule="cosine", steps=1000, mollified_states=True))
    config.loss = ConfigDict(
        dict(
            name="autoencoder",
            target="mollified_epsilon",
            pointwise="mse",
            timesteps="uniform",
            points=size * size // 4,
            encoder_points=size * size // 4,
            subset="uniform",
            kl_weight=1e-4,
        )
    )
    config.sampler = ConfigDict(dict(name="ddim", steps=50, eta=0.0))
    config.optimizer = _optimizer_section(learning_rate=5e-5, weight_decay=0.0)
    return config


def latent_config(experiment: str = "ffhq_mollified_256_sampler") -> ConfigDict:
    """Stage 2 (latent DDPM over the encoder's z) defaults."""
    config = ConfigDict()
    config.run = _run_section(experiment)
    config.data = ConfigDict(dict(test_fraction=0.05, encode_batch_size=64, num_workers=4, flip_latents=True))
    config.train = _train_section(
        batch_size=256,
        max_steps=200_000,
        mixed_precision="no",
        eval_steps=1000,
        plot_samples_steps=10000,
        sample_size=16,
    )
    config.model = ConfigDict(dict(arch="latent_mlp", hidden=2048, num_layers=10, time_dim=128, dropout=0.0, skip=True))
    config.prior = ConfigDict(dict(name="white"))
    config.process = ConfigDict(dict(name="ddpm", schedule="const0.008", steps=1000, mollified_states=False))
    config.loss = ConfigDict(dict(name="denoising", target="epsilon", pointwise="l1", timesteps="uniform"))
    config.sampler = ConfigDict(dict(name="ddpm", steps=1000, variance="fixed_large"))
    config.optimizer = _optimizer_section(learning_rate=1e-4, weight_decay=0.04)
    return config


def cpu_autoencoder_config(dataset: str, img_size: int, experiment: str) -> ConfigDict:
    """The CPU-sized stage 1 of ``make demo``, for any data set: a 1-block, two-level network on ``z`` of 64,
    a Gaussian encoder, the ``x0`` target, the linear schedule, 2000 steps of batch 16 at 2e-3 decaying over
    the last quarter.  Each choice was measured on the embedded shapes at 32²
    (``configs/shapes_32_config.py``); the attention and pooling sides are those of a 32² grid (U-Net
    levels 16 and 8), so other sizes set ``model.uno.attn_resolutions`` and ``model.encoder_pool_size``
    (the error before training names the sides that work)."""
    config = autoencoder_config(dataset, img_size, experiment)
    config.data.num_workers = 0
    config.train.update(
        batch_size=16,
        max_steps=2000,
        mixed_precision="no",
        ema_decay=0.99,
        ema_update_every=1,
        log_steps=50,
        plot_samples_steps=500,
        checkpoint_steps=500,
    )
    config.sampler.steps = 25
    config.model.update(
        nf=32,
        time_dim=64,
        num_conv_blocks=1,
        kernel_size=5,
        z_dim=64,
        encoder_pool_size=4,
        decoder_z_grid=4,
        stochastic=True,
    )
    config.model.uno.update(
        width_layout="per_level",
        base_channels=32,
        channel_mults=(1, 2),
        blocks_per_level=(1, 1),
        attn_resolutions=(8,),
        dropout=0.0,
        num_groups=8,
    )
    size = config.data.get_ref("img_size")
    config.loss.encoder_points = size * size
    config.loss.update(kl_weight=2e-5, target="x0")
    config.process.schedule = "linear"
    config.optimizer.update(learning_rate=2e-3, warmup_steps=50, decay_fraction=0.25)
    return config


def cpu_latent_config(experiment: str) -> ConfigDict:
    """The CPU-sized stage 2 of ``make demo``: a 256 × 6 MLP, 6000 steps of batch 128 at 5e-4 decaying over the
    last quarter, latents by DDIM in 50 steps (measured on the shapes codes: ``configs/shapes_latent_config.py``),
    and the codes of the images as they are (no mirrored copies)."""
    config = latent_config(experiment)
    config.data.num_workers = 0
    config.train.update(
        batch_size=128,
        max_steps=6000,
        ema_decay=0.99,
        ema_update_every=1,
        log_steps=100,
        eval_steps=250,
        plot_samples_steps=6000,
        checkpoint_steps=500,
    )
    config.model.update(hidden=256, num_layers=6, time_dim=64)
    config.sampler = ConfigDict(dict(name="ddim", steps=50, eta=0.0))
    config.data.flip_latents = False
    config.optimizer.update(learning_rate=5e-4, weight_decay=0.0, decay_fraction=0.25)
    return config
