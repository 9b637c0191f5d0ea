"""What status makes of a job's progress.jsonl, across an interruption and a resume."""

from __future__ import annotations

import json

from napari_connectome.jobs.events import split_lines, summarize


def test_a_resumed_job_counts_the_blocks_earlier_runs_finished():
    log = [
        {"event": "start", "blocks_total": 3, "t": 0.0},
        {"event": "block", "phase": "segment", "block": [0, 0, 0], "t": 1.0},
        {"event": "block", "phase": "segment", "block": [0, 0, 1], "t": 2.0},
        {"event": "block", "phase": "segment", "block": [0, 0, 2], "t": 3.0},
        {"event": "block", "phase": "relabel", "block": [0, 0, 0], "t": 3.5},
        # killed here; the resume finds every block segmented and one relabelled
        {"event": "start", "blocks_total": 3, "t": 10.0},
        {"event": "block", "phase": "relabel", "block": [0, 0, 1], "t": 11.0},
        {"event": "block", "phase": "relabel", "block": [0, 0, 2], "t": 11.5},
        {"event": "done", "segments": 5, "seams": {}, "t": 12.0},
    ]
    data = "".join(json.dumps(ev) + "\n" for ev in log).encode() + b'{"event": "blo'
    events, end = split_lines(data)
    assert len(events) == len(log)  # the half-written last line waits for the next read
    assert end == len(data) - len(b'{"event": "blo')
    status = summarize(events).as_dict(now=12.0)
    assert status["phase"] == "done"
    assert status["blocks_done"] == status["blocks_total"] == 3
    assert status["blocks_relabelled"] == 3
    assert status["eta_s"] is None
