"""``python -m curate.cli``: the command line in this process (curate.supervise runs it so)."""

from curate.cli import annotate, crawl, inspect, training  # noqa: F401  (registration)
from curate.cli.base import main

main()
