"""The LMDB layouts read by :class:`~infdiff.data.lmdb_dataset.LMDBDataset` and written by ``prepare``.

*infdiff layout* (written by ``python -m infdiff.data.prepare``): key ``__meta__`` holds JSON
``{"format": "infdiff-lmdb", "version": 1, "size": N, "channels": C, "length": L,
"complete": bool, ...}``, key ``__sources__`` the JSON list of source files, and keys
``f"{i:08d}"`` for ``i < L`` the PNG-encoded images.  Only ``complete: true`` marks a usable db.

*LSUN layout*: any other keys, each holding one encoded image (WebP, JPEG or PNG).
"""

from __future__ import annotations

import json
import os
import shlex
import struct
from typing import Any, Dict, Optional

import lmdb

from infdiff.data.errors import DataError

META_KEY = b"__meta__"
SOURCES_KEY = b"__sources__"
FORMAT = "infdiff-lmdb"
VERSION = 1
EXPECTED = "an LMDB environment (a directory holding data.mdb, or an LMDB data file)"


def entry_key(index: int) -> bytes:
    """Key of image ``index`` in the infdiff layout: ``b"00000042"``."""
    return f"{index:08d}".encode("ascii")


class NumberedKeys:
    """The keys ``entry_key(0) .. entry_key(length - 1)`` as a sequence, without storing them."""

    def __init__(self, length: int):
        self.length = int(length)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> bytes:
        if not 0 <= index < self.length:
            raise IndexError(f"entry {index} out of range for {self.length} entries")
        return entry_key(index)


def encode_json(value: Any) -> bytes:
    """``value`` as compact UTF-8 JSON."""
    return json.dumps(value, separators=(",", ":")).encode("utf-8")


def parse_meta(raw: bytes, where: str) -> Dict[str, Any]:
    """The ``__meta__`` record of the db at ``where``, checked to be infdiff format version 1."""
    try:
        meta = json.loads(bytes(raw).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(
            f"{where}: the {META_KEY.decode()} record is not JSON ({err}); expected an infdiff LMDB "
            f"written by `python -m infdiff.data.prepare`"
        ) from err
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or meta.get("version") != VERSION:
        found = (meta.get("format"), meta.get("version")) if isinstance(meta, dict) else type(meta).__name__
        raise DataError(
            f"{where}: unknown {META_KEY.decode()} record {found}; expected format {FORMAT!r} version {VERSION}"
        )
    return meta


def resume_command(meta: Dict[str, Any], where: str) -> str:
    """The ``prepare`` command line that resumes the infdiff db at ``where`` described by ``meta``."""
    source = meta.get("source") or "SRC"
    return (
        f"python -m infdiff.data.prepare {shlex.quote(source)} {shlex.quote(where)} "
        f"--size {meta.get('size')} --channels {meta.get('channels', 3)}"
    )


def data_file(path: str) -> str:
    """The data file of an LMDB at ``path``: ``path/data.mdb`` for a directory, else ``path`` itself."""
    return os.path.join(path, "data.mdb") if os.path.isdir(path) else path


MAGIC = 0xBEEFC0DE
PAGE_HEADER = 16  # bytes before a meta page's MDB_meta (LMDB's PAGEHDRSZ on 64-bit builds)
META_OFFSETS = {"magic": 0, "page_size": 24, "last_page": 120, "txnid": 128}  # inside MDB_meta


def _meta_page(data: bytes, offset: int) -> Optional[Dict[str, int]]:
    """The fields of the LMDB meta page at ``offset`` of ``data`` that locate the file's end, or ``None``."""
    base = offset + PAGE_HEADER
    if len(data) < base + META_OFFSETS["txnid"] + 8:
        return None
    for order in "<>":  # LMDB files are in the writing machine's byte order
        if struct.unpack_from(order + "I", data, base + META_OFFSETS["magic"])[0] == MAGIC:
            page_size = struct.unpack_from(order + "I", data, base + META_OFFSETS["page_size"])[0]
            last_page, txnid = struct.unpack_from(order + "QQ", data, base + META_OFFSETS["last_page"])
            return {"page_size": page_size, "last_page": last_page, "txnid": txnid}
    return None


def check_data_file(path: str, key: str) -> None:
    """Refuse an LMDB whose data file is not LMDB or is shorter than its newest meta page says.

    Mapping a truncated file and reading past its end kills the process with ``SIGBUS``, so the two
    meta pages (pages 0 and 1) are read with ordinary file reads first: the newer one (larger
    transaction id) gives the page size and the last page in use, which must lie inside the file.
    """
    where = f"{key}={path!r}"
    file = data_file(path)
    if not os.path.isfile(file):
        return  # no data file: opening it fails with LMDB's own message
    try:
        size = os.path.getsize(file)
        with open(file, "rb") as stream:
            head = stream.read(2 * 65536)  # enough for both meta pages at any LMDB page size
    except OSError as err:
        raise DataError(f"{where}: cannot read {file} ({err}); expected {EXPECTED}") from err
    first = _meta_page(head, 0)
    if first is None or not 512 <= first["page_size"] <= 65536:
        raise DataError(f"{where}: {file} ({size} bytes) does not start with an LMDB meta page; expected {EXPECTED}")
    second = _meta_page(head, first["page_size"])
    newest = max(filter(None, (first, second)), key=lambda meta: meta["txnid"])
    needed = (newest["last_page"] + 1) * newest["page_size"]
    if size < needed:
        raise DataError(
            f"{where}: {file} is truncated ({size} bytes, but its pages end at {needed} bytes): the copy is "
            "incomplete or the disk lost data; copy the database again or re-run `python -m infdiff.data.prepare`"
        )


def open_readonly(path: str, key: str) -> lmdb.Environment:
    """Open the LMDB at ``path`` read-only, without locking or readahead (safe for many readers), after
    :func:`check_data_file` has checked that reading it cannot run past the end of its file."""
    check_data_file(path, key)
    try:
        return lmdb.open(path, subdir=os.path.isdir(path), readonly=True, lock=False, readahead=False, meminit=False)
    except lmdb.Error as err:
        raise DataError(
            f"{key}={path!r} cannot be opened as LMDB ({type(err).__name__}: {err}); expected {EXPECTED}"
        ) from err
