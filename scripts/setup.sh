#!/usr/bin/env bash
# Install whatever is missing for DWCP on a Debian machine with Python 3.11, and nothing else:
#   - Debian's prometheus and prometheus-alertmanager (with promtool/amtool), when absent
#   - Debian's etcd-server (the consensus benchmarks' same-machine peer, `--peer etcd`), when absent
#   - Debian's rsync (benchmarks/manager_transfer.py's peer), when absent
#   - Debian's wrk (the HTTP benchmarks' load generator), when absent
#   - .venv with the pinned Python dependencies (pyproject.toml), when absent or out of date
# Safe to run again: each step checks first. Prints what it does.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\033[1m[setup]\033[0m %s\n' "$*" >&2; }

need_apt=()
for bin in prometheus promtool prometheus-alertmanager amtool; do
  command -v "$bin" >/dev/null 2>&1 || need_apt+=("$bin")
done
if ((${#need_apt[@]})); then
  log "missing ${need_apt[*]}: installing Debian's prometheus and prometheus-alertmanager"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
    prometheus prometheus-alertmanager >/dev/null
  # The Debian packages may start system daemons on 9090/9093; DWCP's own instances use other ports
  # (see the inventory), so both can run side by side.
fi

# apt_if_missing BIN PACKAGE WHY: Debian's PACKAGE when BIN is not on PATH.
apt_if_missing() {
  command -v "$1" >/dev/null 2>&1 && return 0
  log "missing $1: installing Debian's $2 ($3)"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "$2" >/dev/null
}
# Debian starts an etcd daemon on 2379/2380; the benchmark's members listen on free ports of their own.
apt_if_missing etcd etcd-server "the consensus benchmarks' same-machine peer: tpbft_cluster.py --peer etcd"
apt_if_missing rsync rsync "benchmarks/manager_transfer.py compares transfers with it"
apt_if_missing wrk wrk "the C HTTP load generator benchmarks/compression_selector.py saturates the service with"

PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null 2>&1 || PY=python3
"$PY" -c 'import sys; assert sys.version_info[:2] == (3, 11), sys.version' 2>/dev/null || {
  log "Python 3.11 is required (found $("$PY" --version 2>&1))"; exit 1; }

stamp=.venv/.dwcp-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ ! -x .venv/bin/python ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  [ -x .venv/bin/python ] || { log "creating .venv"; "$PY" -m venv .venv; }
  # torch first, by exact version: the CPU wheel this machine provides satisfies it, so the package
  # install below never resolves torch to a CUDA build.
  if ! .venv/bin/python -c 'import torch, sys; sys.exit(torch.__version__.split("+")[0] != "2.13.0")' 2>/dev/null; then
    log "installing torch==2.13.0 (CPU)"
    .venv/bin/pip install -q torch==2.13.0
  fi
  log "installing dwcp and its pinned dependencies into .venv"
  .venv/bin/pip install -q -e '.[test,bench]'
  echo "$want" > "$stamp"
fi
log "ready: $(.venv/bin/dwcp version) in .venv; prometheus $(prometheus --version 2>&1 | head -1 | awk '{print $3}')"
