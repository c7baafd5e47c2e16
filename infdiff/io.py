"""Files: crash-safe writes, checkpoint loading, and images in ``[-1, 1]`` as 8-bit pictures and PNG bytes.

Every write goes to a temporary file next to its destination, is flushed and ``fsync``-ed,
then renamed over the destination with :func:`os.replace` (atomic on POSIX and Windows).  A
crash, ``Ctrl-C`` or full disk therefore leaves either the previous file or the complete new one
at ``path``, never a partial file.
"""

from __future__ import annotations

import contextlib
import io
import os
import pickle
import uuid
from pathlib import Path
from typing import Any, BinaryIO, Callable, Union

import numpy as np
import torch
from PIL import Image

PathLike = Union[str, "os.PathLike[str]"]


def _fsync_directory(directory: Path) -> None:
    """Persist a rename inside ``directory`` (POSIX only; best effort where the filesystem refuses)."""
    if os.name != "posix":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


def _atomic_write(path: PathLike, write: Callable[[BinaryIO], Any], fsync: bool = True) -> Path:
    """Call ``write(file)`` on a temporary sibling of ``path``, then atomically move it onto ``path``.

    With ``fsync=False`` the data and the rename are not forced to disk: a process crash
    still never exposes a partial file, but a power loss may lose the newest write.
    On any exception the temporary file is removed and ``path`` is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "xb") as f:
            write(f)
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    if fsync:
        _fsync_directory(path.parent)
    return path


def atomic_write_bytes(data: bytes, path: PathLike, fsync: bool = True) -> Path:
    """Write ``data`` to ``path`` atomically (see the module docstring); returns ``path``."""
    return _atomic_write(path, lambda f: f.write(data), fsync=fsync)


def atomic_write_text(text: str, path: PathLike, encoding: str = "utf-8", fsync: bool = True) -> Path:
    """Write ``text`` to ``path`` atomically; returns ``path``."""
    return atomic_write_bytes(text.encode(encoding), path, fsync=fsync)


def atomic_torch_save(obj: Any, path: PathLike) -> Path:
    """``torch.save(obj, path)`` that never leaves a truncated file at ``path``; returns ``path``."""
    return _atomic_write(path, lambda f: torch.save(obj, f))


def _numpy_array_globals() -> list:
    """The numpy constructors a pickled ndarray needs: data only, nothing that runs code.

    Checkpoints written before the RNG state held tensors (:mod:`infdiff.train.rng`) store
    numpy's state as an ndarray; allowing these lets them load weights-only too.
    """
    multiarray = np._core.multiarray if hasattr(np, "_core") else np.core.multiarray  # numpy >= 2 renamed it
    return [multiarray._reconstruct, np.ndarray, np.dtype, type(np.dtype(np.uint32))]


def torch_load(path: PathLike, map_location: Any = "cpu") -> Any:
    """Load a checkpoint or cache written by :func:`atomic_torch_save` with ``weights_only=True``.

    torch's restricted unpickler builds tensors and plain Python values only, so a file
    planted in a run directory (a ``__reduce__`` payload) raises
    :class:`pickle.UnpicklingError` instead of running its code.
    """
    allowed = _numpy_array_globals()
    if hasattr(torch.serialization, "safe_globals"):  # torch >= 2.5: allowed for this call only
        allowing = torch.serialization.safe_globals(allowed)
    else:
        torch.serialization.add_safe_globals(allowed)
        allowing = contextlib.nullcontext()
    try:
        with allowing:
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        if "weights only" not in str(error).lower():
            raise
        refused = next((line.strip() for line in str(error).splitlines() if "GLOBAL" in line), "an unsupported object")
        raise UnsafeFileError(
            f"{path} holds objects other than tensors and plain Python values ({refused}); infdiff loads "
            "checkpoints and caches weights-only so that a file cannot run code, and files it wrote never hold such objects"
        ) from None


class UnsafeFileError(pickle.UnpicklingError):
    """A checkpoint or cache that would need arbitrary unpickling (and so could run code) to load."""


def check_images(images: torch.Tensor) -> None:
    """Raise unless ``images`` is a non-empty ``(B, C, H, W)`` tensor with 1 (grey) or 3 (RGB) channels."""
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[1] not in (1, 3) or not len(images):
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"expected a (B, C, H, W) tensor with B >= 1 and C in (1, 3), got {shape}")


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """``(B, C, H, W)`` values in ``[-1, 1]`` as a ``(B, H, W, C)`` uint8 array: ``round((x + 1) · 127.5)``.

    Values are clamped to ``[-1, 1]`` and NaN becomes mid-grey; an 8-bit value ``v`` read back as
    ``v / 127.5 - 1`` (:func:`infdiff.data.transforms.to_tensor`) gives the same array again.
    """
    check_images(images)
    x = torch.nan_to_num(images.detach().float().cpu(), nan=0.0).clamp(-1.0, 1.0)
    return ((x + 1.0) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def array_to_pil(array: np.ndarray) -> Image.Image:
    """An ``(H, W, 1)`` or ``(H, W, 3)`` uint8 array as a greyscale (``"L"``) or RGB Pillow image."""
    return Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array)


def to_pil(x: torch.Tensor) -> Image.Image:
    """One image ``(C, H, W)`` in ``[-1, 1]`` with ``C`` 1 or 3 as an 8-bit ``"L"``/``"RGB"`` image (clamped)."""
    if not isinstance(x, torch.Tensor) or x.dim() != 3 or x.shape[0] not in (1, 3):
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"to_pil expects a tensor (C, H, W) with C 1 or 3, got {shape}")
    return array_to_pil(to_uint8(x.unsqueeze(0))[0])


def png_bytes(image: Image.Image) -> bytes:
    """``image`` encoded as PNG (lossless)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
