"""Latent DDPM for the shapes autoencoder (CPU-sized; used by `make demo`).

Training longer mattered more than a wider network.  On the codes of one demo autoencoder (held-out
loss at the end of each run, the learning rate decaying over the last quarter; CPU):
3000 steps of the 256 × 6 MLP 0.155 (about 1 minute), 6000 steps 0.149 (about 2 minutes),
4000 steps of 384 × 8 0.149 (about 2.5 minutes), 6000 steps of 512 × 10 0.147 (about 5 minutes).
In 64 samples decoded with each, the longer runs drew more complete rings where the 3000-step
one drew crescents (judged by eye).
"""

from infdiff.pipeline.default_configs import cpu_latent_config


def get_config():
    return cpu_latent_config(experiment="shapes_32_sampler")
