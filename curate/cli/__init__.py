"""``curate``: the command line, a thin layer over the library: one module per group of commands
(crawl: run, demo, score; training: retrain, calibrate, loop, bench; inspect: status, audit, sql,
report, export; annotate: attributes, leakage, review), the options built from the config
dataclasses (options.py), printing apart (printing.py).

Orchestrated commands import ``flows`` (Ray, Prefect) only when they run, so the library and
``--help`` never load them. The commands load on first use of ``main``: the supervising parent
of ``curate run`` never imports them (half a second). Library errors map to exit codes (see
curate.errors).
"""

from __future__ import annotations

import os
import sys


def __getattr__(name: str):
    if name == "main":
        from curate.cli import annotate, crawl, inspect, training  # noqa: F401  (the commands register on main)
        from curate.cli.base import main

        return main
    raise AttributeError(name)

SUPERVISED = {"run", "demo", "bench", "loop", "score", "retrain"}  # commands that start Ray or Prefect


def entry() -> None:
    """The ``curate`` executable: the commands that start Ray and Prefect run supervised (see
    curate.supervise: Ctrl-C exits at once, with one line), the others in this process."""
    from curate.supervise import CHILD, supervised

    args = sys.argv[1:]
    command = next((a for a in args if not a.startswith("-")), None)
    if command in SUPERVISED and not os.environ.get(CHILD) and "--help" not in args and "-h" not in args:
        sys.exit(supervised(args))
    __getattr__("main")()
