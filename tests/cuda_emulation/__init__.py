"""The CUDA kernels of ``csrc/*.cu``, compiled for the CPU and run by an emulated GPU (``runtime.h``).

CI has no GPU, so without this the CUDA kernels would only ever be compiled there.  The sources
are translated, not edited: each launch ``kernel<<<grid, block, shared, stream>>>(args);`` becomes
``::cuda_emulation::Launch(grid, block, shared, stream).run([&] { kernel(args); });``, the CUDA
runtime headers give way to ``runtime.h``, the device check accepts CPU tensors, and the module
gains the emulator's controls (``set_seed``, ``launches``).  Everything else, every index and every
reduction, is the kernels' own code, which is what the tests then hold to the reference.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import shutil
import subprocess
from pathlib import Path
from types import ModuleType
from typing import Dict, Iterable

import torch

from infdiff.ops.extension import HEADERS, SOURCE_DIR, SOURCES, ExtensionUnavailable, cache_root

HERE = Path(__file__).resolve().parent
CUDA_RUNTIME_INCLUDE = re.compile(r"^#include <(?:c10/cuda/[\w/.]+|math_constants\.h)>\n", re.MULTILINE)
BINDINGS = "PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {"
FLAGS = ["-O1", "-ffp-contract=off"]  # the GPU's round-to-nearest arithmetic: nothing fused into an FMA
# AddressSanitizer, and UBSan's alignment check made fatal: x86 forgives a misaligned 8-byte load, a GPU does not
SANITIZER_FLAGS = ["-fsanitize=address,alignment", "-fno-sanitize-recover=alignment", "-fno-omit-frame-pointer"]


def _kernel_start(text: str, launch: int) -> int:
    """Where the kernel named before ``<<<`` at ``launch`` begins (its name, with any template arguments)."""
    i = launch
    if text[i - 1] == ">":  # explicit template arguments: walk back to their opening "<"
        depth = 0
        while True:
            i -= 1
            depth += {">": 1, "<": -1}.get(text[i], 0)
            if depth == 0:
                break
    while i > 0 and (text[i - 1].isalnum() or text[i - 1] in "_:"):
        i -= 1
    return i


def _closing_paren(text: str, opening: int) -> int:
    depth = 0
    for i in range(opening, len(text)):
        depth += {"(": 1, ")": -1}.get(text[i], 0)
        if depth == 0:
            return i
    raise ValueError(f"unbalanced parentheses after offset {opening}")


def rewrite_launches(text: str) -> str:
    """Every ``kernel<<<config>>>(args);`` as a :class:`Launch` of a lambda calling ``kernel(args)``."""
    pieces, done = [], 0
    while (launch := text.find("<<<", done)) != -1:
        start = _kernel_start(text, launch)
        config_end = text.index(">>>", launch)
        opening = config_end + 3
        while text[opening].isspace():
            opening += 1
        if text[opening] != "(":
            raise ValueError(f"a launch without arguments at offset {launch}: {text[start : opening + 20]!r}")
        closing = _closing_paren(text, opening)
        if text[closing + 1] != ";":
            raise ValueError(f"a launch used as an expression at offset {launch}")
        kernel, config, args = text[start:launch], text[launch + 3 : config_end], text[opening + 1 : closing]
        pieces += [text[done:start], f"::cuda_emulation::Launch({config}).run([&] {{ {kernel}({args}); }});"]
        done = closing + 2
    return "".join(pieces) + text[done:]


def translate(source: str, bindings: bool) -> str:
    """A ``.cu`` file's text as C++ for the emulator (``bindings``: it holds the module's bindings)."""
    text = rewrite_launches(CUDA_RUNTIME_INCLUDE.sub("", source)).replace(".is_cuda()", ".is_cpu()")
    if bindings:
        if BINDINGS not in text:
            raise ValueError(f"no {BINDINGS!r} to add the emulator's controls to")
        text = text.replace(BINDINGS, BINDINGS + " ::cuda_emulation::bind(m);")
    return f'#include "{"bindings.h" if bindings else "runtime.h"}"\n' + text


def build(
    name: str, sources: Iterable[Path], bindings: str, sanitize: bool = False, source_dir: Path = SOURCE_DIR
) -> ModuleType:
    """Translate ``sources`` (``bindings``: the file name that holds the module's bindings) and compile them
    against the headers of ``source_dir`` (``csrc/``, or an edited copy: a kernel candidate's).

    ``sanitize`` builds with AddressSanitizer, which checks every access the kernels make to heap memory
    (a tensor's storage), and the alignment sanitizer, which stops at the first access of a type (a channel
    pair) at an address off its alignment: such a module loads only into a process started with
    ``asan_environment()``.
    """
    sources = list(sources)
    texts = {path.stem: translate(path.read_text(), path.name == bindings) for path in sources}
    flags = FLAGS + (SANITIZER_FLAGS if sanitize else [])
    digest = hashlib.sha256((HERE / "runtime.h").read_bytes() + (HERE / "bindings.h").read_bytes())
    for header in HEADERS:
        digest.update((source_dir / header).read_bytes())
    for text in texts.values():
        digest.update(text.encode())
    digest.update(" ".join(flags).encode() + torch.__version__.encode())
    folder = cache_root() / f"{name}_{digest.hexdigest()[:16]}"
    folder.mkdir(parents=True, exist_ok=True)
    for stem, text in texts.items():
        target = folder / f"{stem}.cpp"
        if not target.exists() or target.read_text() != text:  # untouched files keep ninja's objects
            target.write_text(text)
    if sanitize:
        os.environ.pop("LD_PRELOAD", None)  # the compilers started below need no sanitizer runtime
    try:
        from torch.utils import cpp_extension

        cpp_extension.verify_ninja_availability()
        return cpp_extension.load(
            f"{name}_{digest.hexdigest()[:16]}",
            [str(folder / f"{stem}.cpp") for stem in texts],
            extra_cflags=flags,
            extra_ldflags=SANITIZER_FLAGS if sanitize else None,
            extra_include_paths=[str(HERE), str(source_dir)],
            build_directory=str(folder),
            verbose=False,
        )
    except Exception as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ExtensionUnavailable(f"building the emulated CUDA kernels failed: {first}") from error


def compiler_at_hand() -> bool:
    """A C++ compiler and ninja are here: an emulated build that fails is then the sources' fault (a
    CUDA-only construct the emulator lacks, say, which nvcc's compile check passes), not the machine's."""
    from torch.utils import cpp_extension

    return shutil.which(os.environ.get("CXX", "c++")) is not None and cpp_extension.is_ninja_available()


@functools.lru_cache(maxsize=None)
def load_emulated_kernels(sanitize: bool = False) -> ModuleType:
    """csrc's CUDA kernel library, with the bindings and signatures of ``load_kernels("cuda")``, on CPU tensors."""
    sources = (SOURCE_DIR / source for source in SOURCES["cuda"])
    return build("infdiff_cuda_emulated", sources, "bindings.cpp", sanitize)


@functools.lru_cache(maxsize=None)
def load_probe_kernels(sanitize: bool = False) -> ModuleType:
    """``probe_kernels.cu``: the emulator's shuffles and barriers, and the mistakes it exists to catch."""
    return build("infdiff_cuda_emulator_probes", [HERE / "probe_kernels.cu"], "probe_kernels.cu", sanitize)


def asan_environment() -> Dict[str, str]:
    """The environment of a Python process that can load a sanitized build: the sanitizer's runtime
    preloaded, and the C++ runtime with it (its interceptor of ``throw`` must find the real one, which
    Python itself does not load); no leak report (the interpreter's allocations are not ours to judge)."""
    runtimes = []
    for library in ("libasan.so", "libstdc++.so.6"):
        path = subprocess.run(["gcc", f"-print-file-name={library}"], capture_output=True, text=True).stdout.strip()
        if not Path(path).is_file():
            raise ExtensionUnavailable(f"no {library} for AddressSanitizer (gcc says {path!r})")
        runtimes.append(path)
    return dict(os.environ, LD_PRELOAD=" ".join(runtimes), ASAN_OPTIONS="detect_leaks=0")
