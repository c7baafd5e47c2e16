"""Integration of the networks with the mollified diffusion: training signal and sampling."""

import torch

from infdiff.diffusion import AutoencoderLoss, DiscreteDDPM, GaussianMollifier, make_denoiser, sample_ddim
from infdiff.nn import DiffusionAutoencoder, SparseEncoder, SparseUNet

SIZE = 16
UNO = dict(base_channels=16, channel_mults=(1, 2), blocks_per_level=1, attn_resolutions=(4,), num_groups=4, dropout=0.0)


def tiny_autoencoder():
    torch.manual_seed(0)
    common = dict(channels=3, train_size=SIZE, nf=16, uno_res=8, uno_channels=16, uno=UNO, num_conv_blocks=1)
    return DiffusionAutoencoder(SparseEncoder(z_dim=8, **common), SparseUNet(time_dim=32, z_dim=8, **common))


def mollified_process():
    return DiscreteDDPM.named("cosine", 1000, GaussianMollifier(1.0, SIZE), mollified_states=True)


def one_image(batch):
    u = (torch.arange(SIZE) + 0.5) / SIZE
    img = torch.stack(
        [
            torch.sin(2 * torch.pi * u)[:, None] * torch.cos(2 * torch.pi * u)[None, :],
            u[:, None] - u[None, :],
            torch.cos(3 * u)[:, None].expand(SIZE, SIZE),
        ]
    )
    return img.unsqueeze(0).expand(batch, -1, -1, -1)


def test_tiny_autoencoder_overfits_one_image_through_the_stage_one_loss():
    """∞-Diff's stage-1 loss: decoder on one random quarter of the pixels, encoder on a fresh quarter."""
    model = tiny_autoencoder()
    loss = AutoencoderLoss(
        mollified_process(), points=SIZE * SIZE // 4, encoder_points=SIZE * SIZE // 4, train_size=SIZE
    )
    optimiser = torch.optim.Adam(model.parameters(), lr=2e-3)

    def held_out_loss():
        with torch.no_grad():
            return float(loss(model, one_image(16), torch.Generator().manual_seed(5))["diffusion"].mean())

    before = held_out_loss()
    g = torch.Generator().manual_seed(1)
    for _ in range(150):
        parts = loss(model, one_image(4), g)
        optimiser.zero_grad()
        parts["loss"].mean().backward()
        optimiser.step()
    assert held_out_loss() < before / 10


def test_decoder_samples_at_training_and_double_resolution_through_the_same_sampler():
    model = tiny_autoencoder().eval()
    process = mollified_process()
    z = model.encode(one_image(2)).z
    seen, estimates = [], []

    def model_fn(x, t):
        seen.append((tuple(x.shape), t.tolist()))
        return model.conditioned_on(z)(x, t)

    denoise = make_denoiser(model_fn, process, "mollified_epsilon")

    def recorded(x, t):
        estimates.append(denoise(x, t))
        return estimates[-1]

    for size in (SIZE, 2 * SIZE):
        g = torch.Generator().manual_seed(0)
        x_T = process.terminal_state((2, 3, size, size), generator=g)
        out = sample_ddim(recorded, x_T, process, 5)
        assert out.shape == (2, 3, size, size) and torch.isfinite(out).all()
        assert torch.equal(out, estimates[-1]), "the sample is the last clean-state estimate"
    assert [s for s, _ in seen] == [(2, 3, SIZE, SIZE)] * 5 + [(2, 3, 2 * SIZE, 2 * SIZE)] * 5
    assert seen[0][1] == [999, 999] and seen[4][1] == [0, 0], "the network sees the kept steps' original ids"
