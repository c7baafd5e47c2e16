"""Fault injection against the whole pipeline: kill -9 series with bitwise resume checks, and a battery of
bad inputs, each run as a user would run it (the top-level programs, in fresh processes).

    python benchmarks/fault_injection.py --out benchmarks/results/fault_injection_cpu.json

**Kills.**  Stage 1 (tiny shapes config, a checkpoint every 4 steps) is trained once without
interruption and once under a series of ``SIGKILL``\\ s: the instant a checkpoint's temporary file appears
(inside the write), at a random moment of training, or during start-up; then stage 2 the same way,
one kill the instant ``latents.pt`` is written.  After each kill the same command is started again; a kill is
*survived* when that start resumes from the newest complete checkpoint (or starts fresh when there
is none) without an error.  The killed runs' final checkpoints are compared tensor by tensor with the
uninterrupted ones (*bitwise-exact*), and no partial checkpoint file may be left.

**Bad inputs** (:mod:`bad_inputs`): malformed config values, config files, options of
``generate_samples.py``, damaged data and planted files.  Each ends as a clear one-line error naming
what to change, is handled with a warning, or counts as a silent acceptance, a crash without a
message (a signal, or nothing printed) or an unclear failure (a traceback, or a message that does
not name it).  Prints the figures and writes them, with every case's last line, as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import torch
from tqdm.auto import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bad_inputs import (  # noqa: E402  (a sibling module of this script)
    CLEAR,
    CONFIG_VALUES,
    CRASH,
    ROOT,
    SILENT,
    STAGE1,
    STAGE2,
    TINY_STAGE1,
    TINY_STAGE2,
    UNCLEAR,
    WARNED,
    Case,
    classify,
    config_flags,
    data_cases,
    generate,
    make_data,
    stage1,
    stage2,
)

from infdiff.train.checkpoint import CheckpointManager  # noqa: E402

KILL_SERIES = {
    STAGE1: ["write", "training", "startup", "write", "training", "write", "training", "write"],
    STAGE2: ["latents", "write", "training", "startup"],
}
STEPS = 1500  # enough that the series' launches, each killed after a few hundred steps at most, do not finish
LONG = {
    "train.max_steps": STEPS,
    "train.checkpoint_steps": 25,
    "train.log_steps": 25,
    "train.plot_samples_steps": STEPS,
}


def environment() -> dict:
    return dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))


def stage_args(program: str, runs: Path) -> list:
    """The command line of ``program``'s tiny run in ``runs``, long enough to be killed in."""
    longer = [f"{key}={value}" for key, value in LONG.items()]
    if program == STAGE1:
        return config_flags("config", "shapes_32_config.py", TINY_STAGE1 + longer + [f"run.output_dir={runs}"])
    return config_flags(
        "config", "shapes_latent_config.py", TINY_STAGE2 + longer + [f"run.output_dir={runs}", "train.eval_steps=250"]
    ) + config_flags("decoder_config", "shapes_32_config.py", [f"run.output_dir={runs}"])


def run_directory(program: str, runs: Path) -> Path:
    return runs / ("shapes_32" if program == STAGE1 else "shapes_32_sampler")


def partial_files(run: Path) -> list:
    folder = run / "checkpoints"
    return sorted(folder.glob(".checkpoint-*.tmp")) if folder.is_dir() else []


def kill_when(proc: subprocess.Popen, mode: str, run: Path, rng: random.Random) -> bool:
    """SIGKILL ``proc`` at the moment ``mode`` names; returns whether it was still running to be killed."""
    deadline = time.time() + 180
    if mode == "startup":  # while importing, building or encoding, before the first step
        time.sleep(rng.uniform(0.5, 2.5))
    elif mode == "training":  # at a random moment between two checkpoints, once training has started
        metrics = run / "metrics.jsonl"
        size = metrics.stat().st_size if metrics.exists() else 0
        while (not metrics.exists() or metrics.stat().st_size == size) and proc.poll() is None:
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 1.0))
    else:
        seen = (lambda: partial_files(run)) if mode == "write" else (lambda: (run / "latents.pt").exists())
        while not seen() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.0005)
    if proc.poll() is not None:
        return False
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return True


def started_at(output: str):
    """The step a run said it resumed at (0 when fresh), or ``None`` when it printed neither."""
    match = re.search(r"resuming at step (\d+)|: fresh", output)
    return None if match is None else int(match.group(1) or 0)


def newest_step(run: Path) -> int:
    """The step of the newest complete checkpoint in ``run`` (0 when there is none)."""
    newest = [p.name for p in CheckpointManager(run / "checkpoints").checkpoints()]
    return int(newest[-1][len("checkpoint-") : -len(".pt")]) if newest else 0


def next_report_is_right(launches: list) -> bool:
    """Whether the first later launch that got far enough to say where it started (one killed during
    start-up may not) started from the newest complete checkpoint, with no traceback on the way."""
    for launch in launches:
        if launch["error"]:
            return False
        if launch["started_at"] is not None:
            return launch["started_at"] == launch["expected_start"]
    return False


def kill_series(program: str, runs: Path, reference: Path, modes, rng: random.Random) -> dict:
    """Train ``program`` in ``runs`` under the kills of ``modes``; compare with the run in ``reference``."""
    run, args, kills = run_directory(program, runs), stage_args(program, runs), []
    runs.mkdir(parents=True, exist_ok=True)
    for mode in tqdm(modes, desc=f"kills {program}", leave=False):
        expected_start = newest_step(run)
        log = runs / f"{Path(program).stem}_launch_{len(kills)}.log"
        with open(log, "w") as out:
            proc = subprocess.Popen(
                [sys.executable, str(ROOT / program), *args], env=environment(), stdout=out, stderr=out
            )
            killed = kill_when(proc, mode, run, rng)
        output = log.read_text()
        kills.append(
            dict(
                mode=mode,
                killed=killed,
                inside_checkpoint_write=bool(partial_files(run)),
                started_at=started_at(output),
                expected_start=expected_start,
                error="Traceback" in output,
            )
        )
    final_expected = newest_step(run)
    final = subprocess.run(
        [sys.executable, str(ROOT / program), *args], env=environment(), capture_output=True, text=True
    )
    ok = final.returncode == 0
    final_start = started_at(final.stdout + final.stderr)
    launches = kills[1:] + [dict(started_at=final_start, expected_start=final_expected, error=not ok)]
    survived = [next_report_is_right(launches[i:]) for i in range(len(kills))]
    exact = ok and same_state(run, run_directory(program, reference))
    return dict(
        program=program,
        kills=kills,
        killed=sum(k["killed"] for k in kills),
        inside_checkpoint_write=sum(k["inside_checkpoint_write"] for k in kills),
        survived=sum(s for s, k in zip(survived, kills) if k["killed"]),
        final_status=final.returncode,
        bitwise_exact=exact,
        partial_files_left=len(partial_files(run)),
    )


def same_state(run: Path, reference: Path) -> bool:
    """Whether the newest checkpoints of two runs hold the same step and bitwise the same tensors."""
    a = CheckpointManager(run / "checkpoints").newest_loadable()[1]
    b = CheckpointManager(reference / "checkpoints").newest_loadable()[1]
    if a["step"] != b["step"]:
        return False

    def tensors(tree, prefix=""):
        if isinstance(tree, torch.Tensor):
            yield prefix, tree
        elif isinstance(tree, dict):
            for key, value in tree.items():
                yield from tensors(value, f"{prefix}.{key}")
        elif isinstance(tree, (list, tuple)):
            for i, value in enumerate(tree):
                yield from tensors(value, f"{prefix}[{i}]")

    left = dict(tensors({k: a[k] for k in ("model", "ema", "optimizer")}))
    right = dict(tensors({k: b[k] for k in ("model", "ema", "optimizer")}))
    return left.keys() == right.keys() and all(torch.equal(left[k], right[k]) for k in left)


def run_case(case: Case, workdir: Path) -> dict:
    result = subprocess.run(
        [sys.executable, str(ROOT / case.program), *case.args],
        env=environment(),
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = result.stdout + result.stderr
    lines = [line for line in output.strip().splitlines() if line.strip()]
    return dict(
        name=case.name,
        program=case.program,
        outcome=classify(case, result.returncode, output),
        status=result.returncode,
        last_line=lines[-1][:400] if lines else "",
    )


def plant_checkpoint(runs: Path):
    """A newest stage-1 checkpoint whose unpickling would create a marker file, and the case that samples
    the runs then (it must fall back to the real checkpoint with a warning, never create the marker)."""
    payload = (
        "import torch\nclass P:\n    def __reduce__(self):\n        return open, ({marker!r}, 'w')\n"
        "torch.save({{'step': 99999999, 'model': P()}}, {path!r})\n"
    )
    marker = runs / "code ran"
    target = runs / "shapes_32" / "checkpoints" / "checkpoint-99999999.pt"
    subprocess.run([sys.executable, "-c", payload.format(marker=str(marker), path=str(target))], check=True)
    return generate("a checkpoint with a code payload", [], "refusing", runs, outcome="warning"), marker


def battery(work: Path, reference: Path, limit: int = 0) -> dict:
    """Every bad-input case; ``reference`` holds trained runs (stage 1 and 2) that cases may copy."""
    data = make_data(work / "data")
    out = work / "scratch"
    cases = [stage1(f"config value {o}", o, expect, out / f"value_{i}") for i, (o, expect) in enumerate(CONFIG_VALUES)]
    broken = work / "broken_config.py"
    broken.write_text("def get_config(:\n")
    no_model = work / "no_model.py"
    no_model.write_text(
        f"import sys\nsys.path.insert(0, {str(ROOT)!r})\nfrom configs.shapes_32_config import get_config as full\n\n"
        "def get_config():\n    config = full()\n    del config['model']\n    return config\n"
    )
    cases += [
        Case("config file that does not exist", STAGE1, ("--config", str(work / "nope.py")), "nope.py"),
        Case("config file with a syntax error", STAGE1, ("--config", str(broken)), "broken_config.py', line 1"),
        Case("config without a model section", STAGE1, ("--config", str(no_model)), "no 'model' section"),
        stage1("resume with another model.nf", "model.nf=16", "model.nf (given 16, trained 8)", reference),
        *data_cases(data, out),
        stage2(
            "stage 2 test_fraction -0.5", ["--config.data.test_fraction=-0.5"], "data.test_fraction=-0.5", reference
        ),
        stage2("stage 2 test_fraction 1.0", ["--config.data.test_fraction=1.0"], "data.test_fraction=1.0", reference),
        stage2("stage 2 batch_size 0", ["--config.train.batch_size=0"], "train.batch_size=0", reference),
        stage2("stage 2 eval_steps 0", ["--config.train.eval_steps=0"], "train.eval_steps=0", reference),
        stage2("stage 2 encode_batch_size 0", ["--config.data.encode_batch_size=0"], "encode_batch_size=0", reference),
        stage2(
            "stage 2 on an untrained stage 1",
            ["--decoder_config.run.experiment=nope"],
            "(--decoder_config.run.experiment)",
            reference,
        ),
        stage2(
            "stage 2 contradicting stage 1", ["--decoder_config.model.nf=16"], "--decoder_config.model.nf=16", reference
        ),
    ]
    options = [
        (["--num_samples", "0"], "--num_samples"),
        (["--num_samples", "-3"], "--num_samples"),
        (["--batch_size", "0"], "--batch_size"),
        (["--sample_img_size", "0"], "--sample_img_size"),
        (["--sample_img_size", "1"], "--sample_img_size"),
        (["--sample_img_size", "-8"], "--sample_img_size"),
        (["--sample_img_size", "4096", "--num_samples", "16", "--batch_size", "16"], "fits"),
        (["--sample_img_size", "20000"], "largest --sample_img_size"),
        (["--sampling_steps", "0"], "--sampling_steps"),
        (["--latent_sampling_steps", "0"], "--latent_sampling_steps"),
        (["--noise_size", "50"], "--noise_size 50"),
        (["--seed", "-1"], "--seed"),
        (["--inv_snr", "-1"], "--inv_snr"),
        (["--sampler", "nope"], "--sampler"),
        (["--decoder_config.run.experiment=nope"], "(--decoder_config.run.experiment)"),
        (["--out_dir", str(data["file"])], "is an existing file"),
    ]
    cases += [generate(f"generate_samples.py {' '.join(o[:2])}", o, expect, reference) for o, expect in options]
    results = [run_case(case, work) for case in tqdm(cases[:limit] if limit else cases, desc="bad inputs")]
    planted, marker = plant_checkpoint(reference)  # last: every case before it reads the runs as trained
    results.append(run_case(planted, work))
    if marker.exists():
        results[-1]["outcome"] = "code run from a file"
    counts = Counter(r["outcome"] for r in results)
    return dict(total=len(results), counts=dict(counts), cases=results)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=None, help="JSON to write (default: print only)")
    parser.add_argument("--seed", type=int, default=0, help="seeds the random kill moments")
    parser.add_argument("--quick", action="store_true", help="one kill per stage and five bad inputs (a smoke test)")
    args = parser.parse_args(argv)
    rng, started = random.Random(args.seed), time.time()
    with tempfile.TemporaryDirectory(prefix="fault_injection_") as tmp:
        work = Path(tmp)
        reference, killed = work / "reference", work / "killed"
        series = []
        for program, modes in KILL_SERIES.items():
            subprocess.run(
                [sys.executable, str(ROOT / program), *stage_args(program, reference)],
                env=environment(),
                check=True,
                capture_output=True,
            )
            series.append(kill_series(program, killed, reference, modes[:1] if args.quick else modes, rng))
        inputs = battery(work, reference, limit=5 if args.quick else 0)
    figures = dict(
        kills_survived=sum(s["survived"] for s in series),
        kills=sum(s["killed"] for s in series),
        kills_inside_checkpoint_writes=sum(s["inside_checkpoint_write"] for s in series),
        resumes_bitwise_exact=sum(s["bitwise_exact"] for s in series),
        series=len(series),
        partial_checkpoint_files_left=sum(s["partial_files_left"] for s in series),
        bad_inputs=inputs["total"],
        clear_errors_or_warnings=inputs["counts"].get(CLEAR, 0) + inputs["counts"].get(WARNED, 0),
        silent_acceptances=inputs["counts"].get(SILENT, 0),
        crashes_without_a_message=inputs["counts"].get(CRASH, 0),
        unclear_failures=inputs["counts"].get(UNCLEAR, 0),
        code_run_from_a_file=inputs["counts"].get("code run from a file", 0),
    )
    report = dict(
        figures=figures,
        seconds=round(time.time() - started, 1),
        torch=torch.__version__,
        python=sys.version.split()[0],
        series=series,
        bad_inputs=inputs,
    )
    for case in inputs["cases"]:
        if case["outcome"] not in (CLEAR, WARNED):
            print(f"{case['outcome']}: {case['name']} (status {case['status']}): {case['last_line']}")
    for name, value in figures.items():
        print(f"{name}: {value}")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
