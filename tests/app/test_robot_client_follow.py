"""The GUI-side client's Align API through the real control process: ``follow_path`` refuses a
bad path before sending it (typed), the dead-man drives the path while held, the state
carries ``follow``, and STOP aborts the path."""
import numpy as np
import pytest

from app.robot_controller_client import PathError, PathRefusal, RobotControllerClient
from devices.robot_controller import ControllerConfig

pytestmark = pytest.mark.gui


def test_client_follows_a_path_only_under_the_deadman_and_stop_aborts_it(qtbot):
    client = RobotControllerClient(ControllerConfig(sensor_noise=False))
    client.start()
    try:
        qtbot.waitUntil(lambda: client.state.get("q") is not None, timeout=30000)
        q = np.asarray(client.state["q"], float)
        line = q + np.outer(np.linspace(0, 1, 51), [3.0, 0, 0, 0, 0])       # 3 mm in 0.5 s
        with pytest.raises(PathError) as e:
            client.follow_path("retract", line, 0.01)
        assert e.value.kind is PathRefusal.KIND
        jump = line.copy()
        jump[30:, 0] += 2.0
        with pytest.raises(PathError) as e:
            client.follow_path("approach", jump, 0.01)
        assert e.value.kind is PathRefusal.DISCONTINUOUS and "l11" in str(e.value)
        assert not client.path_active() and client.follow is None

        client.follow_path("approach", line, 0.01)
        assert client.path_active()
        qtbot.waitUntil(lambda: client.follow is not None, timeout=5000)
        assert client.follow["paused"] and client.follow["progress"] == 0.0
        qtbot.wait(200)                                        # not held: nothing moves
        assert abs(client.state["q"][0] - q[0]) < 0.05
        client.set_deadman(True)                               # with a path, the dead-man drives it
        qtbot.waitUntil(lambda: client.follow["arrived"], timeout=20000)
        client.set_deadman(False)
        assert not client.path_active() and client.follow["reason"] == "arrived"
        qtbot.wait(100)
        assert client.state["q"][0] == pytest.approx(q[0] + 3.0, abs=0.01)

        client.follow_path("approach", line[::-1].copy(), 0.01)       # and back, STOP half way
        assert client.path_active()            # the old path's "arrived" is not the new one's
        client.set_deadman(True)
        qtbot.waitUntil(lambda: not client.follow["arrived"] and client.follow["progress"] > 0.3,
                        timeout=20000)
        client.stop()
        qtbot.waitUntil(lambda: client.follow["reason"].startswith("aborted by STOP"), timeout=5000)
        assert client.stopped and not client.path_active() and client.follow["paused"]
        assert np.all(client.state["qd_cmd"] == 0) or client.state["mode"] == "stopped"
    finally:
        client.shutdown()
