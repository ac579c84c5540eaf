"""``python -m curate.cli``: the command line in this process (curate.supervise runs it so)."""

from curate.cli import main

main()
