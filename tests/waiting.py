"""Waiting for something another thread or process does, without a fixed sleep: poll until
it holds, with a deadline generous enough for a machine several times slower than this one
(the deadline costs nothing when the condition comes true at once)."""
import time


def until(cond, timeout: float = 10.0, step: float = 0.005) -> bool:
    """True as soon as ``cond()`` is; False when ``timeout`` seconds pass without it."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(step)
    return bool(cond())
