#!/usr/bin/env bash
# asv smoke run for CI: every benchmark method and parameter combination runs once, on the
# tiny layers T1 and T3 (seconds, not minutes); it fails when a benchmark errors.
# Speed is measured by full runs (see README.md here), never in CI.
set -euo pipefail
cd "$(dirname "$0")"
asv machine --yes > /dev/null
XKERN_ASV_LAYERS=T1,T3 asv run --python=same --quick --show-stderr --dry-run
