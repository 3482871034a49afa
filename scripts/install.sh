#!/usr/bin/env bash
# One-command install of alkit and everything it needs on a Debian machine with Python 3.11:
# Debian's g++ and libxc/openblas (to build GPAW: its C sources compile as C++17), gpaw-data (PAW setups), chromium + chromium-driver (headless browser
# tests of the dashboards), the CPU torch wheel, then alkit[test,gpaw].
set -euo pipefail
cd "$(dirname "$0")/.."
need_apt=()
for pkg in g++ libxc-dev libopenblas-dev gpaw-data chromium chromium-driver; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need_apt+=("$pkg")
done
if [ ${#need_apt[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}"
fi
# torch first, exactly pinned: a looser spec pulls a multi-GB CUDA build.
python -m pip install -q torch==2.13.0
GPAW_CONFIG="$PWD/.ci/gpaw-siteconfig.py" python -m pip install -q -e ".[test,gpaw]"
