"""Images stored in an LMDB: LSUN databases (e.g. Churches) or dbs written by ``infdiff.data.prepare``."""

from __future__ import annotations

import os
import warnings
from typing import Optional, Tuple

import lmdb

from infdiff.data.encoded_images import EncodedImageDataset
from infdiff.data.errors import DataError, UnreadableImageError, UpsampledImageWarning
from infdiff.data.files import require_path
from infdiff.data.lmdb_format import EXPECTED, META_KEY, NumberedKeys, data_file, parse_meta, resume_command
from infdiff.data.lmdb_handles import readonly_handle
from infdiff.data.lmdb_keys import KeyTable, lmdb_keys
from infdiff.io import PathLike

DAMAGED = "copy it again, or re-create it with `python -m infdiff.data.prepare`"


def scan_layout(path: str, key: str) -> Tuple[Optional[bytes], Optional[KeyTable]]:
    """The raw ``__meta__`` record of the db at ``path``, or (LSUN layout, no record) its key table.

    The handle is released on return, so a later error does not keep the db open.
    """
    env = readonly_handle(path, key)
    try:
        with env.begin() as txn:
            raw_meta = txn.get(META_KEY)
        return raw_meta, (lmdb_keys(env, data_file(path)) if raw_meta is None else None)
    except lmdb.Error as err:
        raise DataError(f"{key}={path!r}: the LMDB is damaged ({type(err).__name__}: {err}); {DAMAGED}") from err


def check_record_count(env: lmdb.Environment, meta: dict, where: str) -> None:
    """An infdiff db holds its images plus the ``__meta__`` and ``__sources__`` records, no more, no fewer."""
    expected = meta["length"] + 2
    found = env.stat()["entries"]
    if found != expected:
        raise DataError(
            f"{where} holds {found} records but its __meta__ says {meta['length']} images (+2 records): "
            f"the db is damaged or was written by something else; {DAMAGED}"
        )


class LMDBDataset(EncodedImageDataset):
    """Every image of the LMDB at ``path`` as ``(C, size, size)`` in ``[-1, 1]``.

    The layout is detected from the ``__meta__`` key (see :mod:`infdiff.data.lmdb_format`): an
    infdiff db must be complete (an interrupted ``prepare`` raises :class:`DataError` with the
    command that resumes it); any other db is read as LSUN layout, one encoded image per key, keys
    enumerated once and cached (:mod:`infdiff.data.lmdb_keys`).  Images are resized and
    centre-cropped like :class:`~infdiff.data.image_folder.ImageFolderDataset`; unreadable values
    are skipped with a warning.

    The environment is opened read-only (no lock, no readahead) on first access in each process
    and shared by the datasets of that process (:mod:`infdiff.data.lmdb_handles`), so DataLoader
    workers never use a handle across ``fork``.
    """

    def __init__(self, path: PathLike, size: int, channels: int = 3, key: str = "data.root_dir"):
        resolved = require_path(path, key, EXPECTED, directory=False)
        super().__init__(size, channels, location=os.fspath(path), key=key)
        self.path = resolved
        raw_meta, table = scan_layout(resolved, key)
        self.meta = None if raw_meta is None else self._checked_meta(raw_meta)
        if self.meta is not None:
            check_record_count(readonly_handle(resolved, key), self.meta, f"{key}={self.location!r}")
        self.keys = table if self.meta is None else NumberedKeys(self.meta["length"])
        if len(self.keys) == 0:
            raise DataError(f"{key}={os.fspath(path)!r} is an empty LMDB; expected {EXPECTED} holding images")
        self._env: Optional[lmdb.Environment] = None

    def _checked_meta(self, raw_meta: bytes) -> dict:
        """The meta record of an infdiff db, which must be complete and hold images at least ``size`` big."""
        where = f"{self.key}={self.location!r}"
        meta = parse_meta(raw_meta, where)
        if meta.get("complete") is not True:
            raise DataError(
                f"{where} is an incomplete infdiff LMDB ({meta.get('processed', 0)} of "
                f"{meta.get('num_sources', '?')} source images processed, prepare was interrupted); "
                f"re-run `{resume_command(meta, self.path)}` to resume it"
            )
        if not isinstance(meta.get("length"), int) or meta["length"] < 0:
            raise DataError(f"{where}: __meta__ has no valid 'length' (got {meta.get('length')!r})")
        if isinstance(meta.get("size"), int) and meta["size"] < self.size:
            self.warned_upsampling = True
            warnings.warn(
                f"{where} holds {meta['size']}px images but {self.size}px were requested: images are "
                f"upsampled; prepare the db with --size {self.size} for full detail",
                UpsampledImageWarning,
                stacklevel=3,
            )
        return meta

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_env": None}

    def _environment(self) -> lmdb.Environment:
        """This process's shared read-only handle, kept alive while the dataset lives."""
        self._env = readonly_handle(self.path, self.key)
        return self._env

    def __len__(self) -> int:
        return len(self.keys)

    def encoded(self, index: int) -> bytes:
        try:
            with self._environment().begin() as txn:
                value = txn.get(self.keys[index])
        except lmdb.Error as err:  # a damaged page: this record is lost, the others may still be readable
            raise UnreadableImageError(f"cannot read {self.describe(index)} ({type(err).__name__}: {err})") from err
        if value is None:
            raise UnreadableImageError(f"cannot decode {self.describe(index)}: the key has no value")
        return value

    def describe(self, index: int) -> str:
        return f"key {self.keys[index]!r} of {self.path}"
