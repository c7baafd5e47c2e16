"""Read-only LMDB handles shared within a process and renewed in forked children.

py-lmdb allows one open handle per database and process, and a handle must not be used across
``fork``.  Datasets therefore take their handles from :func:`readonly_handle`: all readers of one
database in a process share a handle, which closes when the last of them lets it go; in a forked
child (a DataLoader worker) the handles inherited from the parent are closed (harmless to the
parent: they are read-only and lock-free) and reopened on first use.
"""

from __future__ import annotations

import os
import weakref

import lmdb

from infdiff.data.lmdb_format import open_readonly

_handles: "weakref.WeakValueDictionary[str, lmdb.Environment]" = weakref.WeakValueDictionary()


def _forget_inherited_handles() -> None:
    """In a fresh fork: close the parent's handles so this process can open its own."""
    for env in list(_handles.values()):
        env.close()
    _handles.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_inherited_handles)


def readonly_handle(path: str, key: str) -> lmdb.Environment:
    """This process's read-only handle of the LMDB at ``path`` (opened if no one holds one).

    The caller keeps the handle alive by holding a reference; ``key`` names the config key
    ``path`` came from in errors.
    """
    real = os.path.realpath(path)
    env = _handles.get(real)
    if env is None:
        env = open_readonly(path, key)
        _handles[real] = env
    return env
