"""One writer per run directory: ``OUT/.lock`` names the process that writes it (pid, host,
command, since). A second writer is refused with a ``RunLocked`` error naming the first; readers
(sql, status, report, export) never look at the lock. A lock whose process is gone (same host, pid
not running, or running but started after the lock was taken: a reused pid) is stale and taken
over. The lock is re-entrant within one process: a command that calls a library writer (``curate
run`` scoring its run) holds it once.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from contextlib import contextmanager

from curate.errors import OutputError, RunLocked
from curate.io.shards import ShardStore

_held: dict[str, int] = {}  # run directory -> depth, in this process


def _started(pid: int) -> float | None:
    """The process's start time (seconds since boot, Linux), or None where unknown."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def _alive(holder: dict) -> bool:
    if holder.get("host") != socket.gethostname():
        return True  # another machine's process: cannot be checked from here
    pid = int(holder.get("pid", -1))
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    start, was = _started(pid), holder.get("started")
    return start is None or was is None or abs(start - was) < 2


def holder(out: str) -> dict | None:
    """The lock's holder as written, or None when the run directory is not locked."""
    try:
        with open(ShardStore(out).lock_file()) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


@contextmanager
def run_lock(out: str, command: str | None = None):
    """Hold the run directory ``out`` for writing while the block runs (created if absent)."""
    out = os.path.abspath(out)
    if _held.get(out):
        _held[out] += 1
        try:
            yield
        finally:
            _held[out] -= 1
        return
    created = not os.path.exists(out)
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create output directory {out}: {exc.strerror}") from exc
    path = ShardStore(out).lock_file()
    me = {"pid": os.getpid(), "host": socket.gethostname(), "started": _started(os.getpid()),
          "command": command or " ".join(["curate", *sys.argv[1:]]), "since": time.strftime("%Y-%m-%d %H:%M:%S")}
    for _ in range(3):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            h = holder(out)
            if h is None:  # being written this instant, or unreadable: look again
                time.sleep(0.05)
                h = holder(out)
            if h is not None and _alive(h):
                raise RunLocked(f"another curate (pid {h.get('pid')} on {h.get('host')}, `{h.get('command')}`, since "
                                f"{h.get('since')}) is writing {out}; wait for it, or stop it (if it is no longer "
                                f"running, remove {path})") from None
            try:  # stale: its process is gone
                os.remove(path)
            except FileNotFoundError:
                pass
            continue
        with os.fdopen(fd, "w") as f:
            json.dump(me, f)
        break
    else:
        raise RunLocked(f"could not lock {out}: {path} keeps reappearing")
    _held[out] = 1
    try:
        yield
    finally:
        _held.pop(out, None)
        if (holder(out) or {}).get("pid") == me["pid"]:
            os.remove(path)
        if created:  # made for a run that never started: leave nothing half-made
            try:
                os.rmdir(out)
            except OSError:
                pass
