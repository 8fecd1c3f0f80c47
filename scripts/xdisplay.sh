# Sourced: make sure an X server with OpenGL is reachable in $DISPLAY.
# Starts Xvfb on a free display number when none is set; it ends with the shell.
if [ -z "${DISPLAY:-}" ]; then
  for n in $(seq 90 140); do
    if [ ! -e "/tmp/.X11-unix/X$n" ] && [ ! -e "/tmp/.X$n-lock" ]; then
      Xvfb ":$n" -screen 0 1920x1080x24 -nolisten tcp +extension GLX >/dev/null 2>&1 &
      fluoronav_xvfb_pid=$!
      for _ in $(seq 50); do [ -e "/tmp/.X11-unix/X$n" ] && break; sleep 0.1; done
      export DISPLAY=":$n"
      echo "fluoronav: no display set; started a virtual X server (Xvfb) on $DISPLAY"
      break
    fi
  done
fi
unset QT_QPA_PLATFORM
