"""Remote jobs widget figures in a real napari window, one JSON line each (docs/benchmarks.md,
"Remote jobs widget").

  .venv/bin/python benchmarks/bench_remote_jobs.py [--delay 0.5] [--seconds 8]

Needs root and slurm-wlm, munge, openssh-server, xvfb: it starts a one-node Slurm cluster and an
sshd "login node" on 127.0.0.1, opens a synthetic volume, and drives the widget as a user would.

* event_loop_stall: a 10 ms Qt timer records the gaps between its ticks (max and p99), side by side
  in one run: the viewer idle; the widget submitting a job, polling its status and streaming its
  blocks into a layer (all in thread workers); and, for contrast, the same status poll done
  naively on the Qt thread from a timer (what the widget avoids).
* responsiveness_vs_idle: timer ticks per second in each case over the idle case (1.0 = as
  responsive as an idle viewer).
* qt_thread_s: time each widget handler held the Qt thread (``_layer_for`` includes napari's
  ``add_labels``, paid once per job; ``_on_block`` includes it the first time).
* block_to_layer_s: seconds from a block's chunk being written on the "cluster" (``written_t`` in
  progress.jsonl) to the layer being refreshed on the Qt thread with it (median and max), with
  the widget's 0.5 s stream poll.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _qt_timing import run_events, tick_gaps

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def emit(**fields) -> None:
    print(json.dumps(fields), flush=True)


def _time_handlers(cls) -> dict[str, list[float]]:
    """Wrap the widget's Qt-thread handlers to record how long each call holds the event loop."""
    import functools

    spent: dict[str, list[float]] = {}
    names = ["_layer_for", "_on_block", "_refresh_dirty", "_on_statuses", "_fill_table", "poll"]
    for name in names:
        orig = getattr(cls, name)

        @functools.wraps(orig)
        def timed(*a, _orig=orig, _name=name, **k):
            t = time.perf_counter()
            try:
                return _orig(*a, **k)
            finally:
                spent.setdefault(_name, []).append(time.perf_counter() - t)

        setattr(cls, name, timed)
    return spent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--delay", type=float, default=0.5, help="seconds per block (slowed watershed)")
    ap.add_argument("--seconds", type=float, default=8.0, help="length of each stall window")
    args = ap.parse_args()

    import os

    from napari_connectome.gui._headless import ensure_display

    ensure_display()
    work = Path(tempfile.mkdtemp(prefix="nc-bench-remote-"))
    os.environ["NAPARI_CONNECTOME_CONFIG_DIR"] = str(work / "config")

    import napari
    from qtpy.QtCore import QTimer
    from qtpy.QtWidgets import QApplication

    from napari_connectome.gui.remote_jobs import RemoteJobsWidget, poll_statuses
    from napari_connectome.testing.services import start_slurm_cluster, start_slurm_login_node
    from tests.test_jobs_helpers import write_cells_volume

    app = QApplication.instance() or QApplication([])
    qt_time = _time_handlers(RemoteJobsWidget)
    volume = work / "cells.h5"
    write_cells_volume(volume, shape=(80, 64, 64))  # 16 blocks of 20 x 32 x 32

    def pump(cond, timeout=300.0) -> None:
        if not run_events(app, cond, timeout):
            raise TimeoutError("benchmark step timed out")

    def stall(seconds: float, until=None) -> dict:
        """Gaps between ticks of a 10 ms timer while the event loop runs for ``seconds``."""
        t0 = time.perf_counter()
        gaps = tick_gaps(app, seconds, until)
        gaps.sort()
        return {
            "max_gap_s": round(gaps[-1], 4),
            "p99_gap_s": round(gaps[int(0.99 * (len(gaps) - 1))], 4),
            "ticks_per_s": round(len(gaps) / max(1e-9, time.perf_counter() - t0), 1),
        }

    with start_slurm_cluster() as cluster, start_slurm_login_node(cluster) as login:
        viewer = napari.Viewer(show=True)
        viewer.window.resize(1400, 900)
        (layer,) = viewer.open(str(volume), plugin="napari-connectome")
        widget = RemoteJobsWidget(viewer, poll_interval_ms=3000)
        viewer.window.add_dock_widget(widget, name="Remote jobs")
        form = widget.profiles
        form.profile_name.value = "loopback"
        form.host.value, form.port.value, form.user.value = login.host, login.port, login.user
        form.key.value, form.known_hosts.value = str(login.client_key), str(login.known_hosts)
        form.partition.value, form.walltime.value = "debug", "00:10:00"
        form.setup.value = f"export PYTHONPATH={REPO}"
        (work / "remote").mkdir()
        form.workdir.value, form.python.value = str(work / "remote"), sys.executable
        form.save_button.clicked.emit()
        widget.image.value = layer
        widget.segmenter.value = "plugin"
        widget.factory.value = "tests.test_jobs_helpers:slow_watershed"
        widget.plugin_options.value = f"{{delay_s: {args.delay}}}"
        widget.block.value, widget.overlap.value, widget.workers.value = "20,32,32", "6", 1

        idle = stall(args.seconds)
        emit(figure="event_loop_stall", case="idle viewer", **idle)

        shown: list[float] = []
        widget.submit_button.clicked.emit()
        pump(lambda: len(widget.streams) == 1, timeout=120)
        (job_id,) = widget.streams
        stream = widget.streams[job_id]
        stream._bridge.block.connect(
            lambda _job, ev: (
                shown.append(time.time() - ev["written_t"]) if ev.get("written_t") else None
            )
        )
        busy = stall(600, until=lambda: stream.final is not None)
        emit(
            figure="event_loop_stall",
            case="widget: submit + status polls + streaming (thread workers)",
            blocks_streamed=stream.blocks,
            final=stream.final,
            **busy,
        )
        if shown:
            emit(
                figure="block_to_layer_s",
                median=round(statistics.median(shown), 3),
                max=round(max(shown), 3),
                blocks=len(shown),
                stream_poll_s=stream.poll_s,
            )

        # contrast: the same status poll run on the Qt thread every 0.5 s
        records = list(widget.records.values())
        naive = QTimer()
        naive.setInterval(500)
        naive.timeout.connect(lambda: poll_statuses(records))
        naive.start()
        blocking = stall(args.seconds)
        naive.stop()
        emit(figure="event_loop_stall", case="naive: status poll on the Qt thread", **blocking)
        emit(
            figure="responsiveness_vs_idle",
            widget=round(busy["ticks_per_s"] / idle["ticks_per_s"], 2),
            naive=round(blocking["ticks_per_s"] / idle["ticks_per_s"], 2),
        )
        for name, spent in sorted(qt_time.items()):
            emit(
                figure="qt_thread_s",
                handler=name,
                calls=len(spent),
                max=round(max(spent), 4),
                total=round(sum(spent), 4),
            )
        widget.detach_all()
        viewer.close()


if __name__ == "__main__":
    main()
