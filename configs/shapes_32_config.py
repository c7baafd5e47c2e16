"""The embedded procedural shapes at 32² — a CPU-sized ∞-Diff autoencoder (used by `make demo`).

No download: images are rendered analytically (infdiff.data.shapes), so they also exist
exactly at 64² and 128² to score super-resolution.  2000 steps keep `make demo` under 15 minutes
on a 2-core CPU.  The demo learns a variant of the data set with one shape per image
(``data.max_shapes=1``: with up to three overlapping shapes the same budget left most objects as
rounded blobs) and larger shapes (``data.radius_range=(0.25, 0.35)`` instead of 0.12–0.3 of the
side: see the last choice below).
Choices, the first three measured as the 1× reconstruction MSE at step 500 (DDIM, 25 steps):
- the network predicts x0 rather than the paper's mollified noise: 0.31 (x0) / 0.31 (v) / 0.49
  (mollified_epsilon), and only x0 gave clean images (the Wiener inverse amplifies the
  high-frequency residue of an undertrained noise predictor);
- a two-level U-Net (16² and 8², attention at 8²) instead of three (down to 4²): 0.23 vs 0.31;
- learning rate 1e-3 instead of 5e-4: 0.28 vs 0.31 (three-level U-Net);
- the encoder average-pools its 8² bottleneck to 4² and flattens it instead of taking the
  global mean (``model.encoder_pool_size``), so ``z`` can say *where* things are.  Trained on
  the highest noise level only (where the decoder's output must come from ``z``), 300 steps,
  the x0 error of 32 held-out images given their own ``z`` was 0.103 (mean, the paper's),
  0.064 (4²) and 0.072 (8², no pooling), against 0.128 for predicting the mean image;
- symmetrically, the decoder adds ``z`` mapped to a 4² feature map to its U-Net input
  (``model.decoder_z_grid``): in the same probe (4² encoder) 0.050 instead of 0.064.
  With both, the full demo run's x0 error at the highest noise level given the image's own
  ``z`` fell from 0.10 (1500 steps, neither) to 0.027 (1300 steps), its DDIM-25 reconstruction
  MSE from 0.25 to 0.083;
- the linear β schedule of DDPM instead of the cosine one (which keeps the signal-to-noise ratio
  above 1 for half of the steps; the linear one falls below 0.1 by step 500, so uniform timestep
  sampling trains the high-noise steps, where the layout is decided, more).  Same cost; the
  demo's reconstruction MSE against exact renderings at 32² / 64² / 128² fell from 0.071 / 0.077
  / 0.080 to 0.055 / 0.061 / 0.064, and the single discs of the reconstructions became round.
  Screened first on a GPU at this budget (DDPM-25 reconstruction MSE at 32²: cosine 0.071,
  linear 0.056), against all pixels per step (0.059, but 4× the sparse work), loss-aware
  timesteps (0.069), U-Net base width 64 (0.073) and the U-Net at 32² instead of 16² (0.108).
The next two choices were measured on one-shape images, as the 1× / 2× reconstruction MSE
of the stage-1 run at step 1300 (DDIM, 25 steps; CPU):
- the encoder sees every pixel (``loss.encoder_points``; its dense path, step-time
  ratio 1.04 in ``benchmarks/results/pixel_counts_cpu.json``) instead of a fresh quarter:
  0.029 / 0.032 → 0.020 / 0.021, and reconstructed rings kept their holes.  A 32² image has
  too few pixels for a quarter of them to show a small shape's outline.  The decoder's loss
  stays on a quarter: training it on every pixel lowered the 1× error but raised the 2× one
  (0.047 / 0.063 against 0.055 / 0.061, three shapes), the random subsets being what teaches
  it to work at other resolutions;
- learning rate 2e-3: 0.020 / 0.021 → 0.017 / 0.019 (4e-3: 0.033 / 0.039 at step 1000, against
  0.022 / 0.026); batch 8 for 2000 steps in the same time: 0.020 / 0.024.
Then, on one-shape images and with the training log's 1× / 2× reconstruction MSE (DDIM, 25
steps; CPU) at the step named:
- one U-Net block per level and one sparse block (``model.uno.blocks_per_level=(1, 1)``,
  ``model.num_conv_blocks=1``) instead of two: a step costs a ratio of 0.63 of the deeper network's
  (``benchmarks/results/demo_network_cpu.json``) and learned no worse per step: 0.018 / 0.019
  at step 1000 and 0.012 / 0.014 at step 1500, against 0.022 / 0.026 (step 1000) and 0.014 /
  0.017 (step 1500) for two blocks.  With 1500 steps, ``z`` had not learnt a shape's kind
  (given only ``z``, the decoder drew every triangle as a disc);
- the learning rate falls linearly to zero over the last 500 of 2000 steps
  (``optimizer.decay_fraction=0.25``): at step 2000 0.0062 / 0.0078 and training loss 0.0046,
  against 0.0078 / 0.0100 and 0.0103 at a constant rate (0.0060 / 0.0082 after 2500 constant
  steps); reconstructed triangles have corners;
- a Gaussian encoder (``model.stochastic``, ``loss.kl_weight`` 2e-5, about 120 nats), compared with
  the deterministic one on the same 8192 images, each through the whole demo: reconstruction
  0.0102 / 0.0135 instead of 0.0065 / 0.0082 at step 2000, but the latent DDPM's samples stop
  falling between the data's modes.  With the deterministic encoder four or five of the demo's
  sixteen samples were crescents, two half-shapes or odd blobs (decoding real codes plus
  Gaussian noise of 0.7 standard deviations per dimension still gave clean shapes, so the codes
  the latent DDPM drew were off the data, not the decoder fragile); with the Gaussian encoder
  two of sixteen.  On 64 further samples of each (seed 1, counted by eye): about 12 off-data
  for the deterministic encoder, about 7 for the Gaussian one.  The price: its reconstructed
  triangles are rounded blobs again (the deterministic encoder's have corners, and two of its
  samples were triangles), ``z`` under the KL penalty not keeping a shape's kind.  KL weight
  5e-6 (about 200 nats) reconstructed no better (0.0105 / 0.0127), still without corners, and
  drew three off-data samples;
- 8192 images rather than 2048: stage 1 sees each image about 4 times instead of 16, and
  stage 2 has four times as many codes (encoding them takes about 20 s).  Not a measured gain:
  with the deterministic encoder, stage 2 on 16384 codes instead of 2048 (and 4000 steps) drew
  four off-data samples instead of five;
- 2000 steps rather than 2400: the Gaussian encoder's fresh-clone demo with 2400 steps took
  13 min 41 s, reconstructed at 0.0077 (step 2400) with triangles starting to show corners, but
  five of its sixteen samples were off the data (two shapes in one image, a crescent);
- larger shapes, radius 0.25–0.35 of the side rather than the data set's 0.12–0.3.  At 32² the
  smallest triangles were 4 pixels from centre to corner, and with the Gaussian encoder every
  triangle came back from the autoencoder as a rounded blob and no sample was a triangle.  Each
  variant through the whole demo (stage 2 as in ``shapes_latent_config.py``), with 64 samples
  (seed 1, 32²) counted by eye; the errors are not comparable across variants, larger shapes
  having more edge pixels:

  | radius | triangles in 64 | off-data in 64 | reconstruction MSE 32² / 64² / 128² |
  |---|---|---|---|
  | 0.12–0.3, stage 2 3000 steps (the previous demo) | about 1 | about 7 | 0.011 / 0.013 / 0.014 |
  | 0.2–0.32, stage 2 6000 steps | about 3 | about 9 | 0.013 / 0.015 / 0.016 |
  | 0.25–0.35, stage 2 6000 steps | about 12 | about 11 | 0.0094 / 0.012 / 0.013 |

  With 0.25–0.35 the reconstructed triangles are triangles (with slightly concave sides) and the
  samples show all four kinds of shape; the off-data ones (crescents, hooks, a Y) are no rarer.
"""

from infdiff.pipeline.default_configs import cpu_autoencoder_config


def get_config():
    config = cpu_autoencoder_config(dataset="shapes", img_size=32, experiment="shapes_32")
    config.data.update(num_samples=8192, max_shapes=1, radius_range=(0.25, 0.35), random_flip=True)
    return config
