#!/usr/bin/env bash
# Set up (scripts/setup.sh) and start fluoronav on the simulated operating room.
# With no display (no $DISPLAY), it starts a virtual X server (Xvfb) so that
# the window still opens; connect a screen or set DISPLAY to see it.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$here/scripts/setup.sh"
source "$here/scripts/xdisplay.sh"
"$here/.venv/bin/fluoronav" "$@"
