"""A network compiled whole (``train.compile_scope=network``) into CUDA graphs on a GPU: every graph
replays as one, and the step computes what the eager step computes.  Its own file, with its own time
limit in ``benchmarks/gpu_check.sh``: inductor's code generation takes tens of seconds there."""

import copy

import pytest
import torch

from infdiff.train.compile import begin_step, compile_parts
from test_pipeline import tiny_configs

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def test_a_network_compiled_whole_replays_as_cuda_graphs_and_gives_the_eager_step(tmp_path, monkeypatch):
    import torch._inductor.config as inductor_config
    from torch._dynamo.utils import counters

    from infdiff.pipeline.autoencoder import build_autoencoder
    from infdiff.pipeline.build import build_loss, build_process

    # a skip fails at once, with its reason, where torch has the switch (the count below holds it either way)
    monkeypatch.setattr(inductor_config.triton, "cudagraph_or_error", True, raising=False)
    config, _ = tiny_configs(tmp_path, "model.backend=cuda")
    torch.manual_seed(0)
    model = build_autoencoder(config).cuda().eval()  # no dropout: both draw the same numbers
    compiled = copy.deepcopy(model)
    assert compile_parts(compiled, "reduce-overhead", "network") == [""]
    loss = build_loss(config, build_process(config))
    batch = (torch.rand(2, 3, 16, 16) * 2 - 1).cuda()
    skipped = counters["inductor"]["cudagraph_skips"]
    for seed in (1, 2, 3):  # the first records, the later ones replay with fresh subsets
        values = []
        for net, mode in ((model, "none"), (compiled, "reduce-overhead")):
            begin_step(mode)
            net.zero_grad()
            value = loss(net, batch, torch.Generator(device="cuda").manual_seed(seed))["loss"].mean()
            value.backward()
            values.append((value.detach().clone(), [p.grad.clone() for p in net.parameters()]))
        (eager, eager_grads), (ours, our_grads) = values
        torch.testing.assert_close(ours, eager, rtol=1e-3, atol=1e-4)
        for a, b in zip(our_grads, eager_grads):
            torch.testing.assert_close(a, b, rtol=1e-2, atol=1e-3)
    assert counters["inductor"]["cudagraph_skips"] == skipped
