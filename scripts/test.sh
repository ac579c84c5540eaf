#!/usr/bin/env bash
# Install everything (incl. dev tools) and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh "all,dev,bench"   # bench: the benchmark's AGPL peer baseline, for its test only
bash scripts/browser.sh   # headless Chromium for the HTML report test, when it can be installed
source scripts/env.sh
set +e
.venv/bin/python -m pytest -q -p no:cacheprovider "$@"
rc=$?
# pytest exits 5 when it collected no tests: not a failure of the suite itself.
[ "$rc" -eq 5 ] && rc=0
exit "$rc"
