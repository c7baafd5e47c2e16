"""Convert a folder of images into an infdiff LMDB of resized PNGs, resumably and atomically.

    python -m infdiff.data.prepare SRC DST.lmdb --size 256 [--channels 3] [--batch-size 256]

Every image below ``SRC`` (sorted relative paths) is decoded, resized and centre-cropped to
``size×size`` (:func:`~infdiff.data.transforms.resize_center_crop`) and stored PNG-encoded under
``f"{i:08d}"`` in the layout of :mod:`infdiff.data.lmdb_format`.

* **Atomic**: images are written in transactions of ``batch_size`` together with the
  ``__meta__`` record saying how far the conversion got; ``"complete": true`` is written only
  by a last, separate transaction, so an interrupted run never leaves a db that loads as valid.
* **Resumable**: re-running the same command continues after the last committed transaction.
  The source file list is stored in the db (``__sources__``, checked by its SHA-256 in the meta),
  so a source folder that changed in between is detected and reported instead of mixed in.
* **Robust**: unreadable source images are skipped with a warning and listed in the meta's
  ``"skipped"``; the LMDB map grows (doubling) whenever it is full.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import warnings
from typing import Any, Dict, List, Optional, Sequence, Tuple

import lmdb
from tqdm.auto import tqdm

from infdiff.data.checks import check_channels, require_int
from infdiff.data.errors import DataError, UnreadableImageError, UnreadableImageWarning
from infdiff.data.files import list_images, require_path
from infdiff.data.lmdb_format import FORMAT, META_KEY, SOURCES_KEY, VERSION, encode_json, entry_key, parse_meta
from infdiff.data.transforms import load_image, resize_center_crop
from infdiff.io import PathLike, png_bytes

DEFAULT_MAP_SIZE = 1 << 30
DEFAULT_BATCH_SIZE = 256

Entry = Tuple[bytes, bytes]


def convert_image(path: str, size: int, channels: int) -> bytes:
    """The PNG of the image file at ``path`` resized and centre-cropped to ``size×size``."""
    return png_bytes(resize_center_crop(load_image(path, channels), size))


def sources_digest(files: Sequence[str]) -> str:
    """SHA-256 of the newline-joined source list, identifying the source folder's contents."""
    return hashlib.sha256("\n".join(files).encode("utf-8")).hexdigest()


def commit(env: lmdb.Environment, entries: Sequence[Entry]) -> None:
    """Write ``entries`` in one transaction, doubling the map size until they fit."""
    while True:
        try:
            with env.begin(write=True) as txn:
                for key, value in entries:
                    txn.put(key, value)
            return
        except lmdb.MapFullError:
            env.set_mapsize(2 * env.info()["map_size"])


def open_destination(dst: PathLike, map_size: int) -> Tuple[str, lmdb.Environment]:
    """Absolute path and writable environment of ``dst``: a new directory or an existing LMDB."""
    path = os.path.abspath(os.path.expanduser(os.fspath(dst)))
    if os.path.exists(path) and not os.path.isdir(path):
        raise DataError(
            f"DST={os.fspath(dst)!r} is a file; expected the path of an LMDB directory (created if missing)"
        )
    if os.path.isdir(path) and os.listdir(path) and not os.path.exists(os.path.join(path, "data.mdb")):
        raise DataError(
            f"DST={os.fspath(dst)!r} is a non-empty directory without data.mdb; expected a new path or "
            f"an LMDB directory from an earlier run of this command"
        )
    return path, lmdb.open(path, map_size=map_size, subdir=True, readahead=False, meminit=False)


def _check_sources(env: lmdb.Environment, meta: Dict[str, Any], files: List[str], src: str, dst: str) -> None:
    """Raise if the source list differs from the one ``dst`` was started with."""
    if meta.get("sources_sha256") == sources_digest(files):
        return
    with env.begin() as txn:
        previous = set(json.loads(bytes(txn.get(SOURCES_KEY) or b"[]")))
    added, removed = sorted(set(files) - previous), sorted(previous - set(files))
    example = (added or removed or ["?"])[0]
    raise DataError(
        f"SRC={src!r} changed since DST={dst!r} was started ({len(added)} files added, {len(removed)} "
        f"removed, e.g. {example!r}); restore the source folder, or delete DST to start over"
    )


def _check_options(meta: Dict[str, Any], size: int, channels: int, dst: str) -> None:
    """Raise if ``dst`` was started with another ``--size`` or ``--channels``."""
    for option, value in (("size", size), ("channels", channels)):
        if meta.get(option) != value:
            raise DataError(
                f"DST={dst!r} was prepared with --{option} {meta.get(option)} but --{option} {value} was "
                f"given; use --{option} {meta.get(option)} to resume it, or another DST for the new setting"
            )


def start_or_resume(
    env: lmdb.Environment, src: str, dst: str, files: List[str], size: int, channels: int
) -> Dict[str, Any]:
    """The meta record to continue from: the committed one (after checks) or a freshly written one."""
    with env.begin() as txn:
        raw = txn.get(META_KEY)
        entries = env.stat()["entries"]
    if raw is not None:
        meta = parse_meta(raw, f"DST={dst!r}")
        _check_options(meta, size, channels, dst)
        _check_sources(env, meta, files, src, dst)
        return meta
    if entries:
        raise DataError(
            f"DST={dst!r} is a non-empty LMDB without an infdiff {META_KEY.decode()} record (an LSUN "
            f"db?); expected a new path or a db from an earlier run of this command"
        )
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "size": size,
        "channels": channels,
        "length": 0,
        "complete": False,
        "processed": 0,
        "num_sources": len(files),
        "sources_sha256": sources_digest(files),
        "skipped": [],
        "source": src,
    }
    commit(env, [(SOURCES_KEY, encode_json(files)), (META_KEY, encode_json(meta))])
    return meta


def _convert_batch(
    src: str, names: Sequence[str], first_index: int, size: int, channels: int, bar: tqdm
) -> Tuple[List[Entry], List[str]]:
    """Entries numbered from ``first_index`` for the readable ``names``, and the unreadable names."""
    entries, skipped = [], []
    for name in names:
        try:
            png = convert_image(os.path.join(src, name), size, channels)
        except UnreadableImageError as err:
            skipped.append(name)
            warnings.warn(f"skipping unreadable source image: {err}", UnreadableImageWarning, stacklevel=2)
        else:
            entries.append((entry_key(first_index + len(entries)), png))
        bar.update(1)
    return entries, skipped


def prepare_lmdb(
    src: PathLike,
    dst: PathLike,
    size: int,
    channels: int = 3,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    map_size: int = DEFAULT_MAP_SIZE,
    progress: bool = True,
) -> Dict[str, Any]:
    """Convert (or finish converting) the image folder ``src`` into the LMDB ``dst``; returns its meta record.

    A ``dst`` that is already complete for the same sources and options is left as it is.
    """
    size, batch_size = require_int(size, "--size"), require_int(batch_size, "--batch-size")
    channels = check_channels(channels, "--channels")
    src_root = require_path(src, "SRC", "a directory of images (searched recursively)")
    files = list_images(src_root)
    if not files:
        raise DataError(f"SRC={os.fspath(src)!r} contains no image files; expected a directory of images")
    dst_path, env = open_destination(dst, map_size)
    try:
        meta = start_or_resume(env, src_root, dst_path, files, size, channels)
        with tqdm(
            total=len(files),
            initial=meta["processed"],
            unit="img",
            desc=f"prepare {os.path.basename(dst_path)}",
            disable=not progress or meta["complete"],
        ) as bar:
            while meta["processed"] < len(files):
                names = files[meta["processed"] : meta["processed"] + batch_size]
                entries, skipped = _convert_batch(src_root, names, meta["length"], size, channels, bar)
                meta = {
                    **meta,
                    "processed": meta["processed"] + len(names),
                    "length": meta["length"] + len(entries),
                    "skipped": meta["skipped"] + skipped,
                }
                commit(env, entries + [(META_KEY, encode_json(meta))])
        if not meta["complete"]:
            meta = {**meta, "complete": True}
            commit(env, [(META_KEY, encode_json(meta))])
    finally:
        env.close()
    return meta


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    """The command-line options of ``python -m infdiff.data.prepare``."""
    parser = argparse.ArgumentParser(prog="python -m infdiff.data.prepare", description=__doc__.split("\n\n")[0])
    parser.add_argument("src", metavar="SRC", help="directory of source images (searched recursively)")
    parser.add_argument("dst", metavar="DST", help="LMDB directory to create, or to resume after an interruption")
    parser.add_argument("--size", type=int, required=True, help="side of the stored square images in pixels")
    parser.add_argument("--channels", type=int, choices=(1, 3), default=3, help="1 greyscale, 3 RGB (default)")
    parser.add_argument(
        "--batch-size",
        type=int,
        default=DEFAULT_BATCH_SIZE,
        help=f"images per transaction (default {DEFAULT_BATCH_SIZE})",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the CLI; returns the exit status (0 success, 1 data error)."""
    args = parse_args(argv)
    try:
        meta = prepare_lmdb(
            args.src, args.dst, args.size, args.channels, batch_size=args.batch_size, progress=not args.quiet
        )
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(
        f"{args.dst}: {meta['length']} images of {meta['size']}x{meta['size']}, "
        f"{len(meta['skipped'])} unreadable sources skipped"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
