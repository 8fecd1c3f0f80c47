# Sourced: make sure an X server with OpenGL is reachable in $DISPLAY.
# When none is set, starts a private Xvfb on a free display number and stops
# it when the sourcing shell exits (trap), so nothing is left running.
if [ -z "${DISPLAY:-}" ]; then
  for n in $(seq 90 140); do
    if [ ! -e "/tmp/.X11-unix/X$n" ] && [ ! -e "/tmp/.X$n-lock" ]; then
      Xvfb ":$n" -screen 0 1920x1080x24 -nolisten tcp +extension GLX >/dev/null 2>&1 &
      fluoronav_xvfb_pid=$!
      trap 'kill "$fluoronav_xvfb_pid" 2>/dev/null' EXIT
      for _ in $(seq 100); do [ -e "/tmp/.X11-unix/X$n" ] && break; sleep 0.1; done
      export DISPLAY=":$n"
      echo "fluoronav: no display set; started a virtual X server (Xvfb) on $DISPLAY"
      break
    fi
  done
fi
unset QT_QPA_PLATFORM
