#!/usr/bin/env bash
# Set up chaosbench on a fresh Debian 12 machine (as root, or with sudo):
# system packages for the local testbed, a virtualenv in .venv, the package and its pinned dependencies.
set -euo pipefail
cd "$(dirname "$0")/.."

sudo=""
[ "$(id -u)" = 0 ] || sudo="sudo"
if command -v apt-get >/dev/null 2>&1; then
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
    prometheus prometheus-node-exporter stress-ng iproute2 iptables nftables procps kmod \
    libnetfilter-queue-dev >/dev/null
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
# pip's exit status is kept; only the noise about unused local index folders is filtered out.
pip_install() { .venv/bin/python -m pip install -q "$@" 2> >(grep -v '^WARNING: Location' >&2); }
# torch==2.13.0 is pinned in pyproject.toml (a CPU wheel); an unpinned torch would pull a multi-GB CUDA build.
pip_install -e ".[dev,k8s]"
# RCAEval declares pins that conflict with numpy 2 / torch 2.13: install it alone, its needs come from pyproject.toml.
pip_install --no-deps "RCAEval==1.8.1"
# locust monkey-patches the process it is imported in: check it in a process of its own.
{ .venv/bin/python -c "import chaosbench, torch, ray, ansible_runner, RCAEval" && .venv/bin/python -c "import locust"; } \
  || { echo "error: setup incomplete: a required package failed to install (see pip output above)" >&2; exit 1; }
echo "chaosbench set up in $(pwd)/.venv"
