"""Event-loop timing shared by the GUI benchmarks: how long the napari window stops answering.

A 10 ms ``QTimer`` ticks while the loop runs; the gaps between ticks are what a user feels as
stutter (idle gaps are ~10 ms, a blocked loop shows as one long gap).
"""

from __future__ import annotations

import time
from collections.abc import Callable


def run_events(app, cond: Callable[[], bool], timeout: float = 300.0) -> bool:
    """Process Qt events until ``cond()`` holds or ``timeout`` seconds pass; returns ``cond()``."""
    t0 = time.perf_counter()
    while not cond() and time.perf_counter() - t0 < timeout:
        app.processEvents()
        time.sleep(0.001)
    return cond()


def tick_gaps(app, seconds: float, until: Callable[[], bool] | None = None) -> list[float]:
    """Seconds between ticks of a 10 ms timer while the loop runs ``seconds`` (or until ``until()``)."""
    from qtpy.QtCore import QElapsedTimer, QTimer

    gaps: list[float] = []
    clock = QElapsedTimer()
    clock.start()
    last = [clock.elapsed()]

    def tick() -> None:
        now = clock.elapsed()
        gaps.append((now - last[0]) / 1000)
        last[0] = now

    timer = QTimer()
    timer.setInterval(10)
    timer.timeout.connect(tick)
    timer.start()
    t0 = time.perf_counter()
    run_events(
        app,
        lambda: time.perf_counter() - t0 > seconds or (until is not None and until()),
        timeout=seconds + 1.0,
    )
    timer.stop()
    return gaps
