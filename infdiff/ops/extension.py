"""Building and loading the compiled kernels of ``csrc/``.

A kernel library is found, in this order, as a module built ahead of time
(``INFDIFF_BUILD_EXT=1 pip install -e .`` makes ``infdiff._sparse_ops_cpu``), unless the sources it
records (:func:`source_key`) are not those of ``csrc/`` here, or compiled on first use with
``torch.utils.cpp_extension.load`` (ninja) into a cache folder keyed by the sources, the torch
version and the machine, so a changed source, another torch or another CPU builds afresh and an
unchanged one loads in a fraction of a second.  Nothing here runs at ``import infdiff``;
a missing compiler or toolkit makes :func:`load_kernels` raise :class:`ExtensionUnavailable`
with the reason, which the backend switch turns into a fallback.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import os
import platform
import sys
from pathlib import Path
from types import ModuleType
from typing import Optional

import torch

SOURCE_DIR = Path(__file__).resolve().parents[2] / "csrc"
SOURCES = {  # bindings.cpp, one module definition for both, is the only file that parses <torch/extension.h>
    "cpu": ("sparse_ops_cpu.cpp", "knn_ops_cpu.cpp", "norm_ops_cpu.cpp", "bindings.cpp"),
    "cuda": ("sparse_ops_cuda.cu", "knn_ops_cuda.cu", "norm_ops_cuda.cu", "bindings.cpp"),
}
HEADERS = (
    "tensor_api.h",
    "autograd_ops.h",
    "sparse_ops.h",
    "sparse_ops_checks.h",
    "knn_ops.h",
    "norm_ops.h",
)  # part of every key
FLAGS = {"cpu": ["-O3", "-fopenmp", "-march=native"], "cuda": ["-O3"]}
CUDA_FLAGS = ["-O3", "--expt-relaxed-constexpr"]  # no fast math: results must match the reference


class ExtensionUnavailable(RuntimeError):
    """The compiled kernels cannot be built or loaded here (the message says why)."""


def cache_root() -> Path:
    """Where JIT builds live: ``$INFDIFF_EXTENSION_DIR``, else ``$XDG_CACHE_HOME/infdiff/extensions``."""
    if os.environ.get("INFDIFF_EXTENSION_DIR"):
        return Path(os.environ["INFDIFF_EXTENSION_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "infdiff" / "extensions"


def _machine_fingerprint() -> str:
    """The CPU's instruction-set flags (builds use ``-march=native``), or the architecture name."""
    try:
        with open("/proc/cpuinfo") as info:
            flags = next((line for line in info if line.startswith(("flags", "Features"))), "")
    except OSError:
        flags = ""
    return platform.machine() + flags


def source_key(kind: str) -> str:
    """Hash of the ``csrc/`` files a ``kind`` build compiles: an ahead-of-time build records it
    (``setup.py`` defines ``INFDIFF_SOURCE_KEY``, ``bindings.cpp`` exposes it as ``source_key``), so an
    edit of ``csrc/`` after it is noticed instead of loading kernels older than the sources."""
    digest = hashlib.sha256()
    for name in SOURCES[kind] + HEADERS:
        digest.update(name.encode() + b"\0" + (SOURCE_DIR / name).read_bytes())
    return digest.hexdigest()[:16]


def build_key(kind: str) -> str:
    """Hash of everything a JIT build depends on: sources, flags, torch version, machine."""
    digest = hashlib.sha256(source_key(kind).encode())
    digest.update(" ".join(FLAGS[kind] + (CUDA_FLAGS if kind == "cuda" else [])).encode())
    digest.update(torch.__version__.encode())
    digest.update(_machine_fingerprint().encode())
    return digest.hexdigest()[:16]


@functools.lru_cache(maxsize=None)
def load_kernels(kind: str) -> ModuleType:
    """The kernel module for ``kind`` (``"cpu"``), built on first use; :class:`ExtensionUnavailable` if impossible."""
    missing = [name for name in SOURCES[kind] + HEADERS if not (SOURCE_DIR / name).is_file()]
    try:
        prebuilt = importlib.import_module(f"infdiff._sparse_ops_{kind}")
    except ModuleNotFoundError:  # none was built
        prebuilt = None
    except ImportError as why:  # one built against another torch (its symbols do not resolve), or a broken file
        print(f"infdiff: the ahead-of-time kernels do not load ({why}); compiling them instead", file=sys.stderr)
        prebuilt = None
    if prebuilt is not None:
        if missing or getattr(prebuilt, "source_key", None) == source_key(kind):
            return prebuilt  # without csrc/ (an installed copy) the ahead-of-time build is all there is
        print(
            f"infdiff: {prebuilt.__file__} was built from other csrc/ sources than {SOURCE_DIR}; compiling "
            "them instead (to refresh it: INFDIFF_BUILD_EXT=1 pip install -e . --no-build-isolation)",
            file=sys.stderr,
        )
    if missing:
        raise ExtensionUnavailable(
            f"the kernel sources {missing} are not in {SOURCE_DIR} (an installed copy without csrc/)"
        )
    try:
        from torch.utils import cpp_extension

        cpp_extension.verify_ninja_availability()
        name = f"infdiff_sparse_ops_{kind}_{build_key(kind)}"
        folder = cache_root() / name
        folder.mkdir(parents=True, exist_ok=True)
        return cpp_extension.load(
            name,
            [str(SOURCE_DIR / source) for source in SOURCES[kind]],
            extra_cflags=FLAGS[kind],
            extra_cuda_cflags=CUDA_FLAGS if kind == "cuda" else None,
            extra_ldflags=["-fopenmp"] if kind == "cpu" else None,
            build_directory=str(folder),
            verbose=False,
        )
    except Exception as error:  # a compiler, ninja or linker failure: say which, never break the caller
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ExtensionUnavailable(f"building the {kind} kernels failed: {first}") from error


def compile_check(
    nvcc: str = "nvcc", arch: str = "sm_90", resources: bool = False, source_dir: Optional[Path] = None
) -> None:
    """Compile (``-c``, nothing linked or run) every ``csrc/*.cu`` (or ``source_dir``'s: an edited copy, a
    kernel candidate's) against this torch's headers.

    CI runs it (``.ci/run``) on machines without a GPU, so a CUDA kernel
    that does not build never lands.  Raises ``subprocess.CalledProcessError`` after printing nvcc's output.
    ``resources`` prints ptxas's report of every kernel (registers, shared memory, stack frame, spills).
    """
    import subprocess
    import sysconfig
    import tempfile

    from torch.utils import cpp_extension

    includes = [f"-I{path}" for path in cpp_extension.include_paths()] + [f"-I{sysconfig.get_paths()['include']}"]
    abi = f"-D_GLIBCXX_USE_CXX11_ABI={int(torch._C._GLIBCXX_USE_CXX11_ABI)}"
    defines = ["-DTORCH_EXTENSION_NAME=infdiff_compile_check", "-DTORCH_API_INCLUDE_EXTENSION_H", abi]
    with tempfile.TemporaryDirectory() as out:
        if not any(Path(p, "c10/cuda/impl/cuda_cmake_macros.h").exists() for p in cpp_extension.include_paths()):
            # a CPU wheel lacks this one generated header of CUDA builds; its CUDA-wheel content
            shim = Path(out, "c10/cuda/impl/cuda_cmake_macros.h")
            shim.parent.mkdir(parents=True)
            shim.write_text("#pragma once\n#define C10_CUDA_BUILD_SHARED_LIBS\n")
            includes.append(f"-I{out}")
        jobs = []  # one nvcc per file, all at once (each is mostly one single-threaded compiler)
        for source in sorted(Path(source_dir or SOURCE_DIR).glob("*.cu")):
            command = [nvcc, "-c", str(source), "-o", str(Path(out) / (source.stem + ".o")), f"-arch={arch}"]
            command += ["-Xcompiler", "-fPIC", "-std=c++20", *CUDA_FLAGS, *defines, *includes]
            command += ["-Xptxas", "-v"] if resources else []
            jobs.append((source, command, subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)))
        for source, command, job in jobs:
            output, _ = job.communicate()
            if job.returncode:
                print(output.decode(errors="replace"), file=sys.stderr)  # nvcc's errors, in CI's log
                raise subprocess.CalledProcessError(job.returncode, command, output=output)
            if resources:
                print(
                    "\n".join(
                        line
                        for line in output.decode(errors="replace").splitlines()
                        if "ptxas" in line or "spill" in line
                    )
                )
            print(f"compiled {source.name} with {nvcc} for {arch} against torch {torch.__version__}")
