"""Latent DDPM for the shapes autoencoder (CPU-sized; used by `make demo`).

Training longer mattered more than a wider network.  On the codes of one demo autoencoder (held-out
loss at the end of each run, the learning rate decaying over the last quarter; CPU):
3000 steps of the 256 × 6 MLP 0.155 (about 1 minute), 6000 steps 0.149 (about 2 minutes),
4000 steps of 384 × 8 0.149 (about 2.5 minutes), 6000 steps of 512 × 10 0.147 (about 5 minutes).
In 64 samples decoded with each, the longer runs drew more complete rings where the 3000-step
one drew crescents (judged by eye).
"""

from infdiff.pipeline.default_configs import latent_config


def get_config():
    config = latent_config(experiment="shapes_32_sampler")
    config.data.test_fraction = 0.05
    config.data.num_workers = 0
    config.train.batch_size = 128
    config.train.max_steps = 6000
    config.train.ema_decay = 0.99
    config.train.ema_update_every = 1
    config.train.log_steps = 100
    config.train.eval_steps = 250
    config.train.plot_samples_steps = 6000
    config.train.checkpoint_steps = 500
    config.model.hidden = 256
    config.model.num_layers = 6
    config.model.time_dim = 64
    config.sampler.steps = 50
    config.optimizer.learning_rate = 5e-4
    config.optimizer.weight_decay = 0.0
    config.optimizer.decay_fraction = 0.25
    return config
