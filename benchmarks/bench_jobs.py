"""Full-volume job figures on this machine, one JSON line each (see docs/benchmarks.md, docs/scaling.md).

  .venv/bin/python benchmarks/bench_jobs.py [--shape 96 128 128] [--block 32] [--ssh]

* throughput: blocks/s and voxels/s of the segment phase with 1 and 2 local Dask workers, run side by
  side on the same volume (ratio = 2 workers / 1 worker);
* phases: share of wall time in segment / reconcile / relabel / pyramid (2 workers);
* overhead: seconds per block when the mask is empty (no segmentation: read mask, write chunk,
  bookkeeping, scheduling), next to the seconds per watershed block;
* stream_latency: seconds from a block's chunk write to that chunk being in the local cache, while
  streaming a running job (local file, and over SSH to a loopback sshd with --ssh).

The segmenter is the deterministic watershed (fast on CPU); FFN per-block compute adds on top and is
measured by benchmarks/bench_ffn*.py. Figures are for the shared 2-core dev machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import h5py
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from napari_connectome.jobs.events import split_lines
from napari_connectome.jobs.pipeline import run_job
from napari_connectome.jobs.spec import parse_spec
from napari_connectome.jobs.stream import stream_into
from napari_connectome.jobs.transport import LocalTransport, SSHTransport
from tests.test_jobs_helpers import write_cells_volume


def emit(**fig) -> None:
    print(json.dumps(fig), flush=True)


def events_of(output: Path) -> list[dict]:
    return split_lines((output / "progress.jsonl").read_bytes())[0]


def phase_times(events: list[dict]) -> dict[str, float]:
    marks = [
        (e["t"], e.get("phase") or e["event"])
        for e in events
        if e["event"] in ("start", "phase", "done")
    ]
    names = ["segment" if n == "start" else n for _, n in marks]
    return {names[i]: marks[i + 1][0] - marks[i][0] for i in range(len(marks) - 1)}


def spec_for(volume: Path, output: Path, block: int, workers: int, **extra) -> dict:
    spec = {
        "name": "bench",
        "input": f"{volume}:raw",
        "output": str(output),
        "block_shape": [block] * 3,
        "overlap": [8, 8, 8],
        "segmenter": {"kind": "watershed"},
        "backend": {"kind": "local", "workers": workers},
        "pyramid_levels": 2,
    }
    spec.update(extra)
    return parse_spec(spec)


def reconcile_cost() -> None:
    """Face matching for a 128^3 block with 16 voxels of overlap (shared slab 32 x 160 x 160), and
    the global table for 10^6 / 10^7 fragments: what reconciliation costs per block at scale."""
    from napari_connectome.jobs.reconcile import global_lut, match_overlap

    rng = np.random.default_rng(0)
    shape = (32, 160, 160)
    pts = rng.integers(0, 160, (400, 3)) * np.array([0.2, 1, 1])
    from scipy.spatial import cKDTree

    _, a = cKDTree(pts).query(np.indices(shape).reshape(3, -1).T)
    a = (a.reshape(shape) + 1).astype(np.uint32)
    b = a.copy()
    b[:, :, 150:] = 0  # the neighbour's context ends earlier
    t0 = time.perf_counter()
    reps = 5
    for _ in range(reps):
        pairs = match_overlap(a, b, 0.6, 10)
    emit(
        figure="jobs_face_match",
        voxels=int(np.prod(shape)),
        pairs=len(pairs),
        seconds=round((time.perf_counter() - t0) / reps, 4),
    )
    for n in (10**6, 10**7):
        edges = np.stack([rng.integers(1, n, n // 2), rng.integers(1, n, n // 2)], axis=1)
        t0 = time.perf_counter()
        lut = global_lut(n, edges)
        emit(
            figure="jobs_global_lut",
            fragments=n,
            edges=len(edges),
            seconds=round(time.perf_counter() - t0, 3),
            objects=int(lut.max()),
        )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", type=int, nargs=3, default=(96, 128, 128))
    ap.add_argument("--block", type=int, default=32)
    ap.add_argument("--ssh", action="store_true", help="also stream over SSH (needs sshd)")
    ap.add_argument(
        "--reconcile-only", action="store_true", help="only the reconcile micro-figures"
    )
    args = ap.parse_args()
    reconcile_cost()
    if args.reconcile_only:
        return
    tmp = Path(tempfile.mkdtemp(prefix="bench-jobs-"))
    volume = tmp / "cells.h5"
    write_cells_volume(volume, shape=tuple(args.shape), n_cells=int(np.prod(args.shape) / 6000))
    voxels = int(np.prod(args.shape))

    # 1. throughput with 1 and 2 workers, side by side
    rates = {}
    for workers in (1, 2):
        out = tmp / f"w{workers}.ome.zarr"
        res = run_job(spec_for(volume, out, args.block, workers))
        ev = events_of(out)
        seg = phase_times(ev)["segment"]
        rates[workers] = res.blocks_total / seg
        emit(
            figure="jobs_segment_throughput",
            workers=workers,
            blocks=res.blocks_total,
            block=args.block,
            blocks_per_s=round(res.blocks_total / seg, 3),
            voxels_per_s=round(voxels / seg),
            job_seconds=round(res.seconds, 2),
        )
        if workers == 2:
            times = phase_times(ev)
            total = sum(times.values())
            emit(
                figure="jobs_phase_share",
                **{k: round(v / total, 3) for k, v in times.items()},
                total_s=round(total, 2),
            )
    emit(figure="jobs_scaling_ratio_2w_over_1w", ratio=round(rates[2] / rates[1], 3))

    # 2. per-block overhead: an empty mask means nothing to segment
    mask = tmp / "mask.h5"
    with h5py.File(mask, "w") as f:
        f.create_dataset("mask", shape=tuple(args.shape), dtype="u1", fillvalue=0)
    out = tmp / "empty.ome.zarr"
    res = run_job(spec_for(volume, out, args.block, 1, mask=f"{mask}:mask"))
    empty = [
        e["seconds"]
        for e in events_of(out)
        if e.get("phase") == "segment" and e["event"] == "block"
    ]
    full = [
        e["seconds"]
        for e in events_of(tmp / "w1.ome.zarr")
        if e.get("phase") == "segment" and e["event"] == "block"
    ]
    seg = phase_times(events_of(out))["segment"]
    emit(
        figure="jobs_per_block_overhead",
        empty_block_task_s=round(statistics.median(empty), 4),
        empty_block_wall_s=round(seg / res.blocks_total, 4),
        watershed_block_task_s=round(statistics.median(full), 4),
    )

    # 3. streaming latency: chunk written -> chunk in the local cache
    def latency(kind: str, factory) -> None:
        out = tmp / f"stream-{kind}.ome.zarr"
        spec = spec_for(volume, out, args.block, 1)
        runner = threading.Thread(target=run_job, args=(spec,), daemon=True)
        runner.start()
        lags = []

        def on_block(ev):
            if ev.get("written_t"):
                lags.append(ev["cached_t"] - ev["written_t"])

        while not (out / "progress.jsonl").exists():
            time.sleep(0.05)
        stream_into(
            factory,
            str(out),
            tmp / f"cache-{kind}.ome.zarr",
            on_block=on_block,
            poll_s=0.2,
            timeout_s=600,
        )
        runner.join()
        emit(
            figure="jobs_stream_latency",
            transport=kind,
            poll_s=0.2,
            blocks=len(lags),
            median_s=round(statistics.median(lags), 3),
            p90_s=round(float(np.percentile(lags, 90)), 3),
            max_s=round(max(lags), 3),
        )

    latency("local", LocalTransport)
    if args.ssh:
        from napari_connectome.jobs.spec import SSHSpec
        from napari_connectome.testing.services import start_sshd

        server = start_sshd()
        try:
            ssh = SSHSpec(
                host=server.host,
                port=server.port,
                user=server.user,
                key=str(server.client_key),
                known_hosts=str(server.known_hosts),
            )
            latency("ssh", lambda: SSHTransport(ssh))
        finally:
            server.stop()


if __name__ == "__main__":
    main()
