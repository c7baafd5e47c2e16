"""The README's promises that code can check: its library example runs, its commands name real files."""

import re
import shlex
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def code_blocks(language):
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.S)


def test_the_library_example_trains_a_step_and_samples_at_twice_the_size():
    (example,) = [block for block in code_blocks("python") if "sparse_autoencoder" in block]
    namespace = {}
    exec(compile(example, "README.md", "exec"), namespace)
    assert namespace["parts"]["loss"].shape == (4,)
    assert all(p.grad is not None for p in namespace["model"].parameters())
    assert namespace["images"].shape == (4, 3, 64, 64) and torch.isfinite(namespace["images"]).all()


def test_every_script_and_config_a_command_names_exists():
    named = set()
    for block in code_blocks("bash"):
        for word in shlex.split(block.replace("\\\n", " ")):
            if word.endswith(".py") or word.startswith("configs/"):
                named.add(word.split("=")[-1])
    assert named and all((ROOT / path).is_file() for path in named), sorted(
        p for p in named if not (ROOT / p).is_file()
    )
