#!/usr/bin/env bash
# Installs what fluoronav needs on a Debian machine (as root), idempotently:
# the system libraries Qt and VTK load (X11/xcb, OpenGL, Xvfb for headless
# use), a virtual environment in .venv, and fluoronav itself (editable) with
# its test tools. Safe to run again: it skips what is already there.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"

sys_pkgs=(xvfb xauth libgl1 libgl1-mesa-dri libegl1 libglu1-mesa libxkbcommon0
  libxkbcommon-x11-0 libxcb-cursor0 libxcb-icccm4 libxcb-image0 libxcb-keysyms1
  libxcb-randr0 libxcb-render-util0 libxcb-shape0 libxcb-xinerama0 libxcb-xkb1
  libxcb-xfixes0 libxcb-sync1 libxrender1 libxi6 libxtst6 libsm6 libice6
  libfontconfig1 libdbus-1-3 fonts-dejavu-core x11-utils
  plastimatch)  # plastimatch: the DRR baseline of `fluoronav bench drr`
missing=()
for p in "${sys_pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "fluoronav setup: installing system packages: ${missing[*]}"
  if [ "$(id -u)" -ne 0 ]; then
    echo "fluoronav setup: run as root (or install these packages yourself): ${missing[*]}" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

py="${PYTHON:-python3.11}"
command -v "$py" >/dev/null || py=python3
if [ ! -x .venv/bin/python ]; then
  echo "fluoronav setup: creating .venv with $("$py" --version)"
  "$py" -m venv .venv
fi
stamp=".venv/.fluoronav-installed"
want="$(cat setup.cfg pyproject.toml | sha256sum | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "fluoronav setup: installing fluoronav and its dependencies into .venv (first time: a few minutes)"
  .venv/bin/python -m pip install -q --upgrade pip setuptools wheel
  .venv/bin/python -m pip install -q -e ".[test]"
  echo "$want" > "$stamp"
fi
