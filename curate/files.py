"""Files written whole or not at all, and the diff of two configs: a leaf (it imports only
curate.errors), so that models/ and every layer above can use it.

``atomic_write(path, write)`` calls ``write(tmp)`` then renames tmp onto path: a reader sees the
old file or the new one, never half of one; a full disk or a read-only directory is an
OutputError and leaves no temp file behind.
"""

from __future__ import annotations

import errno
import json
import os
import uuid

from curate.errors import OutputError


def atomic_write(path: str, write) -> None:
    """write(tmp_path) then rename onto path; on failure remove the temp file and say why."""
    d, name = os.path.split(path)
    tmp = os.path.join(d, f".{name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    except OSError as exc:
        try:
            os.remove(tmp)
        except OSError:
            pass
        if exc.errno == errno.ENOSPC:
            raise OutputError(f"disk full writing {path}") from exc
        if exc.errno in (errno.EACCES, errno.EROFS, errno.EPERM):
            raise OutputError(f"cannot write {path}: {exc.strerror}") from exc
        raise


def write_json(path: str, obj) -> None:
    def w(tmp):
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())

    atomic_write(path, w)


def config_diff(old: dict, new: dict, prefix: str = "") -> list[str]:
    """'setting: new here, old there' for every leaf that differs between two config dicts."""
    out = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            out += config_diff(a, b, f"{prefix}{k}.")
        elif a != b:
            out.append(f"{prefix}{k}: {b!r} here, {a!r} in the run")
    return out
