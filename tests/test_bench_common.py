"""What every benchmark shares (benchmarks/bench_common.py): timing order, result headers, writing, argument types."""

import argparse
import json
import sys

import pytest

from test_pipeline import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
import bench_common  # noqa: E402  (the benchmarks' sibling module)


def test_each_round_times_every_variant_once_in_a_fresh_seeded_order():
    def run():
        calls = []
        fns = {name: (lambda name=name: calls.append(name)) for name in "abcd"}
        medians = bench_common.interleaved_medians(fns, repeats=6, device="cpu")
        return calls, medians

    calls, medians = run()
    assert set(medians) == set("abcd")
    rounds = [calls[i : i + 4] for i in range(4, len(calls), 4)]  # after the warm-up round
    assert len(rounds) == 6 and all(sorted(r) == list("abcd") for r in rounds)
    assert len({tuple(r) for r in rounds}) > 1  # not one fixed order
    assert run()[0] == calls  # seeded: the same orders every run


def test_results_carry_their_date_and_commit_and_are_written_whole(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("COMMIT", "abc1234")
    results = {**bench_common.environment("demo", "cpu"), "value": 3}
    assert results["commit"] == "abc1234" and len(results["date"]) == 10
    out = tmp_path / "deep" / "demo.json"
    bench_common.publish(results, lambda r: f"| value | {r['value']} |\n", out, echo=False)
    assert capsys.readouterr().out == ""
    assert json.loads(out.read_text())["value"] == 3
    assert out.with_suffix(".md").read_text().endswith(f"Measured {results['date']} at commit abc1234.\n")
    assert sorted(p.name for p in out.parent.iterdir()) == ["demo.json", "demo.md"]  # no temporary left


def test_the_commit_falls_back_to_this_checkout_without_COMMIT(monkeypatch):
    monkeypatch.delenv("COMMIT", raising=False)
    commit = bench_common.source_commit()
    assert commit == "unknown" or len(commit.split("+")[0]) >= 7


@pytest.mark.parametrize(
    "kind, text, message",
    [
        (bench_common.positive(int), "0", "above zero, got 0"),
        (bench_common.positive(int), "-3", "above zero, got -3"),
        (bench_common.fraction, "0", r"in \(0, 1\], got 0"),
        (bench_common.fraction, "1.25", r"in \(0, 1\], got 1.25"),
    ],
)
def test_argument_types_refuse_numbers_out_of_range(kind, text, message):
    with pytest.raises(argparse.ArgumentTypeError, match=message):
        kind(text)
    assert bench_common.positive(int)("4") == 4 and bench_common.fraction("1") == 1.0


class _Profile:
    def __init__(self, events):
        self._events = events

    def events(self):
        return self._events


def test_the_gpu_time_counts_kernels_and_copies_once_and_not_the_host_or_annotated_spans():
    from torch.autograd import DeviceType
    from torch.autograd.profiler_util import FunctionEvent

    def event(name, start, end, device_type, annotation=False):
        return FunctionEvent(0, name, 0, start, end, device_type=device_type, is_user_annotation=annotation)

    kernel = event("gather_conv_kernel", 10.0, 30.0, DeviceType.CUDA)
    copy = event("Memcpy DtoD", 40.0, 45.0, DeviceType.CUDA)
    events = [
        event("infdiff::gather_conv", 0.0, 50.0, DeviceType.CPU),
        event("cudaLaunchKernel", 5.0, 8.0, DeviceType.CPU),
        kernel,
        copy,
        event("optimiser", 10.0, 45.0, DeviceType.CUDA, annotation=True),  # spans the two above
    ]
    assert bench_common.cuda_kernel_events(_Profile(events)) == [kernel, copy]


def test_off_a_gpu_there_is_no_kernel_time_and_the_call_is_not_made():
    calls = []
    assert bench_common.kernel_seconds(lambda: calls.append(1), "cpu") is None
    assert calls == []
