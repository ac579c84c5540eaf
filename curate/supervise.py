"""How a long command ends when it does not finish: Ctrl-C, or an error nobody expected.

``supervised(argv)``: the commands that start Ray and Prefect run in a child process of their own
session. Ctrl-C in a terminal signals the whole foreground process group; here only this small
parent gets it, kills the child's process group at once (Ray's processes and Prefect's local
server die with it: nothing is left to print tracebacks or retry a dead server), removes the
child's lock on the run directory, and prints one line. Every write is atomic and every step
leaves a marker, so rerunning the same command resumes with no duplicates and no gaps.

``crash_report(exc, out)``: an unexpected exception becomes one line (the step, the exception and
its message) and a log file holding the full traceback, in the run directory when there is one.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
import traceback

CHILD = "FACECURATE_SUPERVISED"
INTERRUPTED = "interrupted; rerun the same command to resume"


def supervised(argv: list[str]) -> int:
    """Run ``curate ARGV`` in a child process (its own session) and wait; on SIGINT or SIGTERM
    kill it and its processes and return 130."""
    child = subprocess.Popen([sys.executable, "-m", "curate.cli", *argv], env={**os.environ, CHILD: "1"},
                             start_new_session=True)
    stop: list[int] = []

    def on_signal(signum, frame):
        stop.append(signum)
        _kill(child)

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        rc = child.wait()
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    if stop:
        _release_locks(argv, child.pid)
        print(f"\n{INTERRUPTED}", file=sys.stderr)  # on a line of its own, after any progress bar
        return 130
    return rc


def _kill(child: subprocess.Popen) -> None:
    try:
        os.killpg(child.pid, signal.SIGKILL)  # the child's session: its Ray and Prefect processes too
    except (ProcessLookupError, PermissionError):
        pass


def _release_locks(argv: list[str], pid: int) -> None:
    """The killed child's run lock: in any directory the arguments name (``OUT``, ``--out=OUT``,
    and the demo's ``OUT/run``) whose lock the child holds."""
    from curate.io.lock import holder
    from curate.io.shards import ShardStore

    for a in argv:
        d = a.split("=", 1)[-1]
        for out in (d, os.path.join(d, "run")):
            if os.path.isdir(out) and (holder(out) or {}).get("pid") == pid:
                try:
                    os.remove(ShardStore(out).lock_file())
                except OSError:
                    pass


def _step(tb) -> str:
    """Where it failed: the flow's task (the last frame in flows/), and the innermost frame of our
    own code."""
    frames = traceback.extract_tb(tb)
    ours = [f for f in frames if any(f"{os.sep}{p}{os.sep}" in f.filename for p in ("curate", "models", "flows"))]
    task = next((f.name for f in reversed(ours) if f"{os.sep}flows{os.sep}" in f.filename), None)
    inner = ours[-1] if ours else (frames[-1] if frames else None)
    where = f"{os.path.basename(inner.filename)}:{inner.lineno} in {inner.name}" if inner else "?"
    return f"step {task} ({where})" if task else where


def crash_report(exc: BaseException, out: str | None) -> str:
    """Write the traceback to a log file (OUT/logs/ when OUT is a directory, else the temp dir);
    return the one line to print."""
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    stamp = time.strftime("%Y%m%d-%H%M%S")
    from curate.io.shards import ShardStore

    d = ShardStore(out).logs_dir() if out and os.path.isdir(out) else tempfile.gettempdir()
    path = os.path.join(d, f"error-{stamp}-{os.getpid()}.log" if out and os.path.isdir(out) else f"facecurate-error-{stamp}-{os.getpid()}.log")
    try:
        os.makedirs(d, exist_ok=True)
        with open(path, "w") as f:
            f.write(f"curate {' '.join(sys.argv[1:])}\n\n{text}")
    except OSError:
        path = "(could not be written)"
    msg = str(exc).strip().splitlines()
    return (f"error: unexpected failure in {_step(exc.__traceback__)}: {type(exc).__name__}"
            f"{': ' + msg[0] if msg else ''} (full traceback: {path})")
