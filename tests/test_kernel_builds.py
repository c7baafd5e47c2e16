"""The ahead-of-time build of the kernels (``INFDIFF_BUILD_EXT=1``, ``setup.py``) and which kernel library
:func:`infdiff.ops.extension.load_kernels` takes: the prebuilt module while it matches ``csrc/``, else a JIT
build, and never a prebuilt module older than the sources."""

import importlib.machinery
import os
import subprocess
import sys

import pytest

from test_kernels import cpp_available
from test_pipeline import ROOT

pytestmark = pytest.mark.skipif(not cpp_available(), reason="the C++ kernels do not build here")


def run_python(code, **kwargs):
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, **kwargs)


def test_the_ahead_of_time_build_is_loaded_and_matches_the_reference(tmp_path):
    lib = tmp_path / "lib"
    build = subprocess.run(
        [sys.executable, "setup.py", "-q", "build_ext", "--build-lib", str(lib), "--build-temp", str(tmp_path / "o")],
        cwd=ROOT,
        env=dict(os.environ, INFDIFF_BUILD_EXT="1"),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    check = run_python(
        "import torch, infdiff\n"
        f"infdiff.__path__.append({str(lib / 'infdiff')!r})  # where an editable install puts it: the package\n"
        "from infdiff.ops import SparseImage, sparse_depthwise_conv, uniform_subset\n"
        "from infdiff.ops.extension import load_kernels, source_key\n"
        "module = load_kernels('cpu')\n"
        f"assert module.__file__.startswith({str(lib)!r}), module.__file__\n"
        "assert module.source_key == source_key('cpu'), (module.source_key, source_key('cpu'))\n"
        "g = torch.Generator().manual_seed(0)\n"
        "image = SparseImage.from_dense(torch.randn(2, 6, 16, 16, generator=g), uniform_subset(2, 16, 64, generator=g))\n"
        "weight = torch.randn(6, 5, 5, generator=g)\n"
        "ours, reference = (sparse_depthwise_conv(image, weight, backend=b).values for b in ('cpp', 'torch'))\n"
        "torch.testing.assert_close(ours, reference)\n",
        cwd=ROOT,
    )
    assert check.returncode == 0, check.stderr[-3000:]
    assert check.stderr == ""  # no notice: the prebuilt module matches the sources


PREBUILT = (
    "import sys, types\n"
    "from pathlib import Path\n"
    "from infdiff.ops import extension\n"
    "prebuilt = types.ModuleType('infdiff._sparse_ops_cpu')\n"
    "prebuilt.__file__ = '/site/infdiff/_sparse_ops_cpu.so'\n"
    "sys.modules['infdiff._sparse_ops_cpu'] = prebuilt\n"
)


def test_a_prebuilt_module_matching_the_sources_is_taken_as_it_is():
    run = run_python(
        PREBUILT
        + "prebuilt.source_key = extension.source_key('cpu')\nassert extension.load_kernels('cpu') is prebuilt\n"
    )
    assert run.returncode == 0 and run.stderr == "", run.stderr[-3000:]


def test_a_prebuilt_module_older_than_the_sources_is_never_loaded():
    run = run_python(
        PREBUILT + "prebuilt.source_key = '0123456789abcdef'\n"
        "module = extension.load_kernels('cpu')\n"
        "assert module is not prebuilt and module.__file__.startswith(str(extension.cache_root()))\n"
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "/site/infdiff/_sparse_ops_cpu.so was built from other csrc/ sources" in run.stderr
    assert "INFDIFF_BUILD_EXT=1 pip install -e ." in run.stderr


def test_without_csrc_the_prebuilt_module_is_all_there_is(tmp_path):
    run = run_python(
        PREBUILT + f"extension.SOURCE_DIR = Path({str(tmp_path)!r})\n"
        "assert extension.load_kernels('cpu') is prebuilt  # an installed copy: nothing to compare or compile\n"
        "del sys.modules['infdiff._sparse_ops_cpu']\n"
        "extension.load_kernels.cache_clear()\n"
        "try:\n"
        "    extension.load_kernels('cpu')\n"
        "except extension.ExtensionUnavailable as why:\n"
        "    assert 'are not in' in str(why), why\n"
        "else:\n"
        "    raise AssertionError('no kernels and no sources, yet something loaded')\n"
    )
    assert run.returncode == 0 and run.stderr == "", run.stderr[-3000:]


def test_a_prebuilt_module_that_does_not_load_is_named_and_compiled_afresh(tmp_path):
    broken = tmp_path / "infdiff" / f"_sparse_ops_cpu{importlib.machinery.EXTENSION_SUFFIXES[0]}"
    broken.parent.mkdir()
    broken.write_text("not a shared object")
    run = run_python(
        f"import infdiff\ninfdiff.__path__.append({str(broken.parent)!r})\n"
        "from infdiff.ops import extension\n"
        "assert extension.load_kernels('cpu').__file__.startswith(str(extension.cache_root()))\n"
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "infdiff: the ahead-of-time kernels do not load (" in run.stderr and "compiling them instead" in run.stderr
