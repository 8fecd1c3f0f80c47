#!/usr/bin/env bash
# Set up (scripts/setup.sh) and run the whole test suite. GUI tests need a real
# X server with OpenGL (VTK renders black offscreen): a private Xvfb is
# started when no display is set.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$here/scripts/setup.sh"
source "$here/scripts/xdisplay.sh"
cd "$here"
.venv/bin/python -m pytest "$@"
