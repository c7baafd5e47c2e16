"""Integration of the networks with the mollified diffusion: training signal and sampling."""

import torch

from infdiff.diffusion import (GaussianMollifier, MollifiedDiffusion, Schedule, make_denoiser, respace,
                               sample_ddim, subset_diffusion_loss)
from infdiff.nn import SparseEncoder, SparseUNet
from infdiff.ops import SparseImage, uniform_subset

SIZE = 16
UNO = dict(base_channels=16, channel_mults=(1, 2), blocks_per_level=1, attn_resolutions=(4,), num_groups=4,
           dropout=0.0)


def tiny_autoencoder():
    torch.manual_seed(0)
    common = dict(channels=3, train_size=SIZE, nf=16, uno_res=8, uno_channels=16, uno=UNO, num_conv_blocks=1)
    return SparseUNet(time_dim=32, z_dim=8, **common), SparseEncoder(z_dim=8, **common)


def one_image(batch):
    u = (torch.arange(SIZE) + 0.5) / SIZE
    img = torch.stack([torch.sin(2 * torch.pi * u)[:, None] * torch.cos(2 * torch.pi * u)[None, :],
                       u[:, None] - u[None, :], torch.cos(3 * u)[:, None].expand(SIZE, SIZE)])
    return img.unsqueeze(0).expand(batch, -1, -1, -1)


def autoencoder_loss(process, decoder, encoder, x0, t, generator, noise=None):
    """∞-Diff stage-1 loss: decoder on one random quarter of the pixels, encoder on a fresh quarter."""
    b, n = x0.shape[0], SIZE * SIZE // 4
    index = uniform_subset(b, SIZE, n, generator=generator)
    z = encoder(SparseImage.from_dense(x0, uniform_subset(b, SIZE, n, generator=generator))).z

    def model_fn(values, t):
        return decoder(SparseImage(values, index, (SIZE, SIZE)), t, z).values

    return subset_diffusion_loss(process, model_fn, x0, t, index, "mollified_epsilon", noise)


def test_tiny_autoencoder_overfits_one_image():
    decoder, encoder = tiny_autoencoder()
    process = MollifiedDiffusion(Schedule.named("cosine", 1000), GaussianMollifier(1.0, SIZE))
    optimiser = torch.optim.Adam([*decoder.parameters(), *encoder.parameters()], lr=2e-3)

    def held_out_loss():
        g = torch.Generator().manual_seed(5)
        x0 = one_image(16)
        t = torch.linspace(0, 999, 16).long()
        with torch.no_grad():
            return float(autoencoder_loss(process, decoder, encoder, x0, t, g,
                                          noise=torch.randn(x0.shape, generator=g)).mean())

    before = held_out_loss()
    g = torch.Generator().manual_seed(1)
    for _ in range(150):
        loss = autoencoder_loss(process, decoder, encoder, one_image(4), torch.randint(0, 1000, (4,), generator=g), g)
        optimiser.zero_grad()
        loss.mean().backward()
        optimiser.step()
    assert held_out_loss() < before / 10


def test_decoder_samples_at_training_and_double_resolution_through_the_same_sampler():
    decoder, encoder = tiny_autoencoder()
    decoder.eval()
    process = MollifiedDiffusion(Schedule.named("cosine", 1000), GaussianMollifier(1.0, SIZE))
    schedule = respace(process.schedule, 5)
    z = encoder.eval()(one_image(2)).z
    seen = []

    def model_fn(x, t):
        seen.append((tuple(x.shape), t.tolist()))
        return decoder(x, t, z)

    denoise = make_denoiser(model_fn, process, "mollified_epsilon")
    for size in (SIZE, 2 * SIZE):
        g = torch.Generator().manual_seed(0)
        x_T = process.sample_noise((2, 3, size, size), generator=g)
        out = sample_ddim(denoise, x_T, schedule, process)
        assert out.shape == (2, 3, size, size) and torch.isfinite(out).all()
        assert float(out.abs().max()) <= 1.0
    assert [s for s, _ in seen] == [(2, 3, SIZE, SIZE)] * 5 + [(2, 3, 2 * SIZE, 2 * SIZE)] * 5
    assert seen[0][1] == [int(schedule.timesteps[-1])] * 2 and seen[4][1] == [0, 0]
