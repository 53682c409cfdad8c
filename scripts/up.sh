#!/usr/bin/env bash
# Install what is missing, then bring the whole local DWCP system up (Ctrl-C stops it). Extra
# arguments go to `dwcp up`, e.g. scripts/up.sh --no-load.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/dwcp up "$@"
