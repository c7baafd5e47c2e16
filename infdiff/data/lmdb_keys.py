"""The key list of an LSUN-layout LMDB, held compactly and cached in a sidecar file.

LSUN databases hold up to millions of images under arbitrary keys.  Their keys are enumerated
once with a cursor (values are never read) into a :class:`KeyTable`: one byte buffer plus
offsets, cheap to share with DataLoader workers.  The table is cached next to the data file as
``<data file>.keys.npz`` with a stamp (entry count, file size, modification time); a stale or
unreadable cache is rebuilt, and an unwritable location just means the keys stay in memory.
"""

from __future__ import annotations

import os
import tempfile
from typing import Iterable, Optional

import lmdb
import numpy as np

SIDECAR_SUFFIX = ".keys.npz"


class KeyTable:
    """A sequence of byte-string keys stored as one ``uint8`` buffer and ``(N + 1,)`` int64 offsets."""

    def __init__(self, buffer: np.ndarray, offsets: np.ndarray):
        self.buffer = np.asarray(buffer, dtype=np.uint8)
        self.offsets = np.asarray(offsets, dtype=np.int64)

    @classmethod
    def from_keys(cls, keys: Iterable[bytes]) -> "KeyTable":
        """Pack ``keys`` (in iteration order)."""
        buffer, offsets = bytearray(), [0]
        for key in keys:
            buffer += key
            offsets.append(len(buffer))
        return cls(np.frombuffer(bytes(buffer), dtype=np.uint8), np.array(offsets, dtype=np.int64))

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, index: int) -> bytes:
        if not 0 <= index < len(self):
            raise IndexError(f"key {index} out of range for {len(self)} keys")
        return self.buffer[self.offsets[index] : self.offsets[index + 1]].tobytes()


def db_stamp(env: lmdb.Environment, data_path: str) -> np.ndarray:
    """``(entries, bytes, mtime_ns)`` of a db: a cache made under another stamp is stale."""
    stat = os.stat(data_path)
    return np.array([env.stat()["entries"], stat.st_size, stat.st_mtime_ns], dtype=np.int64)


def load_cached(sidecar: str, stamp: np.ndarray) -> Optional[KeyTable]:
    """The table cached in ``sidecar`` if it exists, is readable and carries ``stamp``."""
    try:
        with np.load(sidecar, allow_pickle=False) as cached:
            if not np.array_equal(cached["stamp"], stamp):
                return None
            return KeyTable(cached["buffer"], cached["offsets"])
    except (OSError, ValueError, KeyError):
        return None


def save_cache(sidecar: str, table: KeyTable, stamp: np.ndarray) -> None:
    """Write ``table`` to ``sidecar`` atomically; silently do nothing where that is not allowed."""
    try:
        handle, temporary = tempfile.mkstemp(dir=os.path.dirname(sidecar), suffix=".tmp")
    except OSError:
        return
    try:
        with os.fdopen(handle, "wb") as stream:
            np.savez(stream, buffer=table.buffer, offsets=table.offsets, stamp=stamp)
        os.replace(temporary, sidecar)
    except OSError:
        os.unlink(temporary)


def lmdb_keys(env: lmdb.Environment, data_path: str) -> KeyTable:
    """All keys of ``env`` in key order, from the sidecar cache of ``data_path`` when it is fresh."""
    sidecar = data_path + SIDECAR_SUFFIX
    stamp = db_stamp(env, data_path)
    table = load_cached(sidecar, stamp)
    if table is None:
        with env.begin() as txn:
            table = KeyTable.from_keys(txn.cursor().iternext(keys=True, values=False))
        save_cache(sidecar, table, stamp)
    return table
