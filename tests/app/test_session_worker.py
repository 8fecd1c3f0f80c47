"""QtThreadRunner: a job runs in its own thread, its progress and result come back in the GUI thread."""
from __future__ import annotations

import threading

from app.qt_worker import QtThreadRunner


def test_job_off_the_gui_thread_results_on_it(qtbot):
    runner = QtThreadRunner()
    gui = threading.current_thread().name
    seen = []

    def job(report):
        report(40, "half way")
        return threading.current_thread().name

    with qtbot.waitCallback(timeout=5000) as done:
        runner.run("fluoronav-test-job", job, lambda r: (seen.append(("done", r, threading.current_thread().name)),
                                                       done(r)),
                   lambda pct, text: seen.append(("progress", pct, text, threading.current_thread().name)))
    assert seen == [("progress", 40, "half way", gui), ("done", "fluoronav-test-job", gui)]


def test_an_escaped_exception_still_ends_the_job(qtbot, caplog):
    runner = QtThreadRunner()

    def job(report):
        raise RuntimeError("driver vanished")

    with qtbot.waitCallback(timeout=5000) as done:
        runner.run("fluoronav-test-bad", job, done, lambda *a: None)
    assert isinstance(done.args[0], RuntimeError) and "background job fluoronav-test-bad failed" in caplog.text
