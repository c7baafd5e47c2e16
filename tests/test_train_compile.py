"""``train.compile``: the static-shape parts of a network (the coarse-grid U-Nets), or with
``train.compile_scope=network`` all of it, compiled in place, computing what the eager network computes,
after the EMA's copy and without touching checkpoints.

The compiler here is ``aot_eager`` (dynamo's trace and AOTAutograd's joint graph, run eagerly): the
compile step that can break on our modules, without inductor's minute of C++ code generation per
network on this CPU."""

import copy
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch._dynamo.testing import CompileCounterWithBackend

from infdiff.train import compile as train_compile
from infdiff.train.compile import COMPILE_MODES, compile_parts, static_shape_parts
from infdiff.train.settings import TrainSettings
from test_pipeline import TINY_AE, tiny_configs


def tiny_autoencoder(tmp_path):
    from infdiff.pipeline.autoencoder import build_autoencoder

    config, _ = tiny_configs(tmp_path)
    torch.manual_seed(0)
    return config, build_autoencoder(config)


def test_the_coarse_grid_networks_are_the_static_shape_parts(tmp_path):
    _, model = tiny_autoencoder(tmp_path)
    assert static_shape_parts(model) == ["encoder.contract", "decoder.uno"], "outermost only: UNO holds a UNOEncoder"
    assert static_shape_parts(model.decoder.uno) == [""]


@pytest.mark.parametrize(
    "scope, parts, compiled_module",
    [
        ("grid", ["encoder.contract", "decoder.uno"], lambda m: m.decoder.uno),
        ("network", [""], lambda m: m),
    ],
)
@pytest.mark.parametrize("backend", ["cpp", "torch"])
def test_compiled_parts_compute_the_eager_loss_and_gradients(
    tmp_path, monkeypatch, scope, parts, compiled_module, backend
):
    """Over two steps on fresh pixel subsets: the whole network's graph (scope ``network``: the sparse
    kernels, the neighbour tables and the kNN inside it) is traced once and holds for the next subset."""
    from infdiff.pipeline.autoencoder import build_autoencoder
    from infdiff.pipeline.build import build_loss, build_process

    counter = CompileCounterWithBackend("aot_eager")
    monkeypatch.setattr(train_compile, "COMPILER_BACKEND", counter)
    config, _ = tiny_configs(tmp_path, f"model.backend={backend}")
    torch.manual_seed(0)
    model = build_autoencoder(config)
    model.eval()  # no dropout, so both runs draw the same numbers
    compiled = copy.deepcopy(model)
    assert compile_parts(compiled, "default", scope) == parts
    assert (
        compiled_module(compiled)._compiled_call_impl is not None and compiled_module(model)._compiled_call_impl is None
    )
    assert list(compiled.state_dict()) == list(model.state_dict()), "checkpoints keep their keys"
    loss = build_loss(config, build_process(config))
    assert loss.points < 16 * 16, "the loss keeps a subset of the pixels"
    batch = torch.rand(2, 3, 16, 16) * 2 - 1
    for seed in (1, 2):
        values = []
        for net in (model, compiled):
            net.zero_grad()
            value = loss(net, batch, torch.Generator().manual_seed(seed))["loss"].mean()
            value.backward()
            values.append((value.detach(), [p.grad.clone() for p in net.parameters()]))
        (eager, eager_grads), (ours, our_grads) = values
        torch.testing.assert_close(ours, eager, rtol=1e-5, atol=1e-6)
        for a, b in zip(our_grads, eager_grads):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    assert counter.frame_count == len(parts), "one graph per compiled part, not recompiled for the second subset"


def test_a_copy_of_a_compiled_module_is_eager_and_its_own(monkeypatch):
    """The EMA's deep copy of a compiled model: torch drops the compiled call from the copy, which then runs
    its own parameters eagerly (no second compilation, no call into the original)."""
    from infdiff.nn.uno import UNO

    monkeypatch.setattr(train_compile, "COMPILER_BACKEND", "aot_eager")
    torch.manual_seed(0)
    uno = UNO(
        4, 4, base_channels=8, channel_mults=(1, 2), blocks_per_level=1, attn_resolutions=(), resolution=8, num_groups=4
    )
    uno.eval()
    compile_parts(uno, "default")
    copied = copy.deepcopy(uno)
    assert copied._compiled_call_impl is None and uno._compiled_call_impl is not None
    x = torch.randn(1, 4, 8, 8)
    torch.testing.assert_close(copied(x), uno(x))
    with torch.no_grad():
        for p in copied.parameters():
            p.zero_()
    assert copied(x).abs().sum() == 0 < uno(x).abs().sum()


@pytest.mark.parametrize(
    "scope, compiled, said",
    [
        ("grid", ["UNOEncoder", "UNO"], "encoder.contract, decoder.uno"),
        ("network", ["DiffusionAutoencoder"], "the whole network"),
    ],
)
def test_the_training_loop_compiles_its_scope_after_its_ema_copy(tmp_path, monkeypatch, capsys, scope, compiled, said):
    from test_pipeline import flags, script

    from infdiff.train import ema

    calls = []
    copy_model = ema.EMA.__init__
    monkeypatch.setattr(torch.nn.Module, "compile", lambda module, **kw: calls.append((type(module).__name__, kw)))

    def copy_and_record(*args, **kwargs):
        calls.append(("EMA", {}))
        copy_model(*args, **kwargs)

    monkeypatch.setattr(ema.EMA, "__init__", copy_and_record)
    monkeypatch.setattr(torch.compiler, "cudagraph_mark_step_begin", lambda: calls.append(("step begins", {})))
    argv = TINY_AE + [f"run.output_dir={tmp_path}", "train.max_steps=1", "train.compile=reduce-overhead"]
    argv.append(f"train.compile_scope={scope}")
    script("train_inf_ae_diffusion.py").main(flags("config", "shapes_32_config.py", argv))
    assert [name for name, _ in calls] == ["EMA", *compiled, "step begins"], "one step, its graphs marked"
    assert all(kw["mode"] == "reduce-overhead" and kw["fullgraph"] and kw["dynamic"] is False for _, kw in calls[1:-1])
    assert f"compiled (reduce-overhead): {said}" in capsys.readouterr().out


def test_a_run_compiled_whole_trains_checkpoints_and_resumes(tmp_path, monkeypatch):
    """Two real compiled steps (``aot_eager``), a checkpoint of the compiled model's own keys, and a resume."""
    from test_pipeline import flags, script

    from infdiff.train.checkpoint import CheckpointManager

    monkeypatch.setattr(train_compile, "COMPILER_BACKEND", "aot_eager")
    argv = TINY_AE + [f"run.output_dir={tmp_path}", "train.compile=default", "train.compile_scope=network"]
    run = flags("config", "shapes_32_config.py", argv + ["train.max_steps=2", "train.checkpoint_steps=2"])
    script("train_inf_ae_diffusion.py").main(run)
    (folder,) = list(tmp_path.rglob("checkpoints"))
    _, state = CheckpointManager(folder).newest_loadable("cpu")
    assert state["step"] == 2
    assert not any("_orig_mod" in key for key in state["model"]), "the compiled model's keys are the eager ones"
    assert all(torch.isfinite(v).all() for v in state["model"].values())
    assert not any("_orig_mod" in key or key.startswith("module.") for key in state["model"])
    resumed = flags("config", "shapes_32_config.py", argv + ["train.max_steps=3", "train.checkpoint_steps=3"])
    with pytest.warns(UserWarning, match="differs from the checkpoint's: train.checkpoint_steps"):
        script("train_inf_ae_diffusion.py").main(resumed)
    assert CheckpointManager(folder).newest_loadable("cpu")[1]["step"] == 3, "resumed at 2, one more compiled step"


@pytest.mark.parametrize("bad", ["fast", "None", ""])
def test_an_unknown_compile_mode_names_the_key_and_the_modes(bad):
    with pytest.raises(ValueError, match=rf"train.compile={bad!r}; expected one of \['none', 'default'"):
        TrainSettings(compile=bad)
    assert COMPILE_MODES[0] == "none"


@pytest.mark.parametrize("bad", ["all", "Grid", ""])
def test_an_unknown_compile_scope_names_the_key_and_the_scopes(bad):
    with pytest.raises(ValueError, match=rf"train.compile_scope={bad!r}; expected one of \['grid', 'network'\]"):
        TrainSettings(compile_scope=bad)


def test_the_front_and_back_benchmark_runs_compiled_twins_beside_the_eager_variants(tmp_path, monkeypatch):
    import json

    from test_pipeline import script

    monkeypatch.setattr(train_compile, "COMPILER_BACKEND", "aot_eager")
    out = tmp_path / "fb.json"
    argv = ["--size", "16", "--batch", "2", "--nf", "8", "--blocks", "1", "--repeats", "1", "--fractions", "0.25"]
    monkeypatch.setattr(sys, "argv", ["decoder_front_back.py", *argv, "--compile", "default", "--out", str(out)])
    script("benchmarks/decoder_front_back.py").main()
    variants = json.loads(out.read_text())["front_back"]
    assert set(variants) == {
        f"{name}{suffix}"
        for name in ("dense_all_pixels", "sparse_cpp_0.25", "sparse_torch_0.25")
        for suffix in ("", "_compiled")
    }
    compiled = variants["sparse_cpp_0.25_compiled"]
    assert compiled["operators_computing"] is None and compiled["peak_ratio_to_dense"] is None
    assert compiled["ratio_to_eager"] == compiled["median_ms"] / variants["sparse_cpp_0.25"]["median_ms"]
    assert variants["dense_all_pixels_compiled"]["ratio_to_dense"] == 1
    assert (
        variants["sparse_cpp_0.25"]["operators_computing"] > 20 and "ratio_to_eager" not in variants["sparse_cpp_0.25"]
    )
    assert "| sparse_cpp_0.25_compiled |" in out.with_suffix(".md").read_text()


def test_the_decoding_benchmark_times_a_decoder_compiled_whole_beside_the_eager_one(tmp_path, monkeypatch):
    """Sampling's shapes repeat at one side: each side compiles once, and the compiled cell says how it
    compares with the eager one at the same side and precision."""
    import json

    from test_pipeline import flags, script

    counter = CompileCounterWithBackend("aot_eager")
    monkeypatch.setattr(train_compile, "COMPILER_BACKEND", counter)
    out = tmp_path / "decode.json"
    argv = ["--sides", "16", "32", "--repeats", "2", "--compile", "default", "--out", str(out)]
    script("benchmarks/decode_step.py").main(flags("config", "shapes_32_config.py", TINY_AE) + argv)
    result = json.loads(out.read_text())
    assert set(result["cells"]) == {"fp32", "fp32_compiled"} and result["compile"] == "default"
    for side in ("16", "32"):
        eager, compiled = result["cells"]["fp32"][side], result["cells"]["fp32_compiled"][side]
        assert compiled["ratio_to_eager"] == compiled["seconds_per_step"] / eager["seconds_per_step"]
        assert compiled["peak_bytes"] is None and eager["peak_bytes"] > 0
    assert counter.frame_count == 2, "one graph per side"
    assert "| fp32_compiled | 32² |" in out.with_suffix(".md").read_text()


@pytest.mark.parametrize("taps", [7, 33])  # the direct conv, and the FFT from FFT_MIN_TAPS
def test_the_dense_path_compiles_outside_autograd_with_its_kernel_caches_left_eager(taps):
    """Sampling: the resampled kernel and the kernel's spectrum are cached between eager calls by the weights'
    version, which a graph cannot hold; compiled, they are computed in the graph, the same values."""
    from infdiff.nn.sparse_block import MonteCarloConv

    conv = MonteCarloConv(4, 7, train_size=16)
    compiled = copy.deepcopy(conv)
    compiled.compile(backend="aot_eager", fullgraph=True, dynamic=False)
    side = 16 * taps // 7  # the kernel resampled to about ``taps`` taps
    x = torch.randn(2, side, side, 4)
    with torch.no_grad():
        for _ in range(2):  # the second call: eager from its caches, compiled from its graph
            torch.testing.assert_close(compiled(x), conv(x), rtol=1e-5, atol=1e-5)
    from infdiff.ops.sparse_conv import FFT_MIN_TAPS

    assert (conv.kernel_at((side, side)).shape[-1] ** 2 >= FFT_MIN_TAPS) == (taps > 31)


def test_the_step_benchmark_compiles_a_variant_as_training_does(tmp_path, monkeypatch):
    import json

    from test_pipeline import flags, script

    monkeypatch.setattr(train_compile, "COMPILER_BACKEND", "aot_eager")
    out = tmp_path / "bench.json"
    script("benchmarks/stage1_variants.py").main(
        ["--out", str(out), "--repeats", "1", "--breakdown", "--variant", "eager", "--variant", "compiled"]
        + ["train.compile=default"]
        + flags("config", "shapes_32_config.py", TINY_AE)
    )
    variants = json.loads(out.read_text())["variants"]
    assert variants["eager"]["breakdown"]["counts"]["operators_computing"] > 0
    assert variants["compiled"]["breakdown"]["counts"] == {}, "a compiled step's operators are not what runs"
    assert 0 < variants["compiled"]["breakdown"]["fractions"]["grid_unet"]


def test_only_the_cuda_graph_modes_mark_the_steps(monkeypatch):
    marks = []
    monkeypatch.setattr(torch.compiler, "cudagraph_mark_step_begin", lambda: marks.append(1))
    for mode in COMPILE_MODES:
        train_compile.begin_step(mode)
    assert len(marks) == len(train_compile.CUDA_GRAPH_MODES) == 2


def test_a_model_without_static_shape_parts_compiles_nothing():
    from infdiff.nn.latent_mlp import LatentMLP

    assert compile_parts(LatentMLP(8, hidden=16, num_layers=2, time_dim=8), "default") == []


def test_a_bad_compile_mode_of_a_benchmark_variant_is_one_line(tmp_path):
    from test_pipeline import ROOT, flags

    argv = ["--out", str(tmp_path / "b.json"), "--variant", "x", "train.compile=fast"]
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "stage1_variants.py"), *argv]
        + flags("config", "shapes_32_config.py", TINY_AE),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        "stage1_variants.py: error: --variant.train.compile='fast': expected one of 'none', 'default', "
        "'reduce-overhead', 'max-autotune', 'max-autotune-no-cudagraphs'"
    )


@pytest.mark.skipif(
    shutil.which("torchrun") is None and not (Path(sys.executable).parent / "torchrun").exists(),
    reason="torchrun not installed",
)
def test_two_processes_train_a_network_compiled_whole_inside_ddp(tmp_path):
    """DDP wraps the network, which is compiled in place inside it (``$INFDIFF_COMPILE_BACKEND=aot_eager``:
    the trace inductor would take): both processes train compiled, and rank 0 checkpoints the eager keys."""
    from test_pipeline import ROOT, flags, newest_state

    torchrun = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")
    argv = TINY_AE + [f"run.output_dir={tmp_path}", "train.max_steps=2", "train.checkpoint_steps=2"]
    argv += ["train.compile=default", "train.compile_scope=network"]
    command = [torchrun, "--nproc_per_node", "2", "--master_port", "29519", str(ROOT / "train_inf_ae_diffusion.py")]
    env = dict(os.environ, OMP_NUM_THREADS="1", INFDIFF_COMPILE_BACKEND="aot_eager")
    done = subprocess.run(
        command + flags("config", "shapes_32_config.py", argv),
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("compiled (default): the whole network") == 1, "rank 0 reports it"
    state = newest_state(tmp_path / "shapes_32")
    assert state["step"] == 2 and len(state["rng"]) == 2
    assert all(torch.isfinite(v).all() for v in state["model"].values())
    assert not any("_orig_mod" in key or key.startswith("module.") for key in state["model"])


def test_an_unknown_compile_backend_ends_the_run_in_one_line_naming_the_variable(tmp_path):
    from test_pipeline import ROOT, flags

    argv = TINY_AE + [f"run.output_dir={tmp_path}", "train.max_steps=1", "train.compile=default"]
    done = subprocess.run(
        [sys.executable, str(ROOT / "train_inf_ae_diffusion.py"), *flags("config", "shapes_32_config.py", argv)],
        env=dict(os.environ, INFDIFF_COMPILE_BACKEND="inductr"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("train_inf_ae_diffusion.py: error: $INFDIFF_COMPILE_BACKEND='inductr' is no torch.compile")
    assert "'inductor'" in last
