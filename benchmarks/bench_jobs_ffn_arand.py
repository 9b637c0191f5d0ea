"""Blockwise FFN with reconciliation vs one canvas over the same region (issue 5's quality bar).

  .venv/bin/python benchmarks/bench_jobs_ffn_arand.py [--crop 250] [--block 128] [--overlap 16]
        [--model DIR] [--precision bf16] [--workers 1]

Segments a crop of the shared FIB-25 training_sample2 with Google's imported FFN model twice: one
canvas over the whole crop (``ffn.segment_region``), and a job of ``block``^3 blocks with
``overlap`` context (local backend). Prints one JSON line: adapted Rand error and VI of the job
against the canvas (target ARAND <= 0.02), both against the ground truth, and wall times.
``--canvas`` reuses a saved whole-volume canvas (``ffn_full_volume.py --out DIR`` writes
``DIR/labels.npy``; same model and precision) instead of computing it again; ``--job`` scores a
finished job's output instead of running one. The full figure (--crop 250 --block 128) takes about
40 min with 2 workers on 2 CPU cores given the canvas.

Google's own single-canvas run of the same volume (fp32, published with the model) is a second
reference: the line also scores the job against it, and the two single canvases against each other,
which is how far apart two whole-volume runs of one model are when only the arithmetic differs.
The job's seam check (face vs interior change rates, see ``docs/hpc.md``) is included.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from _data import DATA as SHARED  # noqa: E402  (../shared/data, or .gpu/data on the GPU machine)


def face_cuts(ref: np.ndarray, test: np.ndarray, block: int, margin: int = 16) -> dict:
    """Per axis: of the neighbouring voxel pairs ``ref`` puts in one object, the fraction ``test``
    puts in two, at the block faces and on the planes inside blocks (``margin`` or more from a face
    and from the volume's border): median and worst plane. Faces that cut more than the planes
    inside blocks cut neurons; faces that cut like them add nothing to the FFN's own variation."""
    out = {}
    for ax, name in enumerate("zyx"):
        r, t = np.moveaxis(ref, ax, 0), np.moveaxis(test, ax, 0)
        same = (r[:-1] == r[1:]) & (r[:-1] > 0)
        cut = (same & (t[:-1] != t[1:])).sum(axis=(1, 2))
        same = same.sum(axis=(1, 2))
        faces = np.arange(block - 1, r.shape[0] - 1, block)
        if not len(faces):
            continue
        k = np.arange(r.shape[0] - 1)
        dist = np.min(np.abs(k[:, None] - faces[None, :]), axis=1)
        inner = (dist >= margin) & (k >= margin) & (k < r.shape[0] - 1 - margin)
        rate = cut / np.maximum(same, 1)
        out[name] = {
            "faces": round(float(cut[faces].sum() / max(same[faces].sum(), 1)), 4),
            "interior_median": round(float(np.median(rate[inner])), 4) if inner.any() else None,
            "interior_max": round(float(rate[inner].max()), 4) if inner.any() else None,
        }
    return out


def seam_check_of(labels: np.ndarray, block: int) -> dict:
    """The job's seam check computed on any labels (e.g. one canvas) at the job's block faces: how
    much the ratio varies where no face is."""
    from napari_connectome.jobs.seams import SeamCounts, face_changes, plane_changes

    counts = SeamCounts()
    for ax in range(3):
        lab = np.moveaxis(labels, ax, 0)
        edges = [*range(0, lab.shape[0], block), lab.shape[0]]
        for lo, hi in itertools.pairwise(edges):
            p, ch = plane_changes(lab[lo:hi], 0)
            counts.interior[ax][0] += p
            counts.interior[ax][1] += ch
            if lo > 0:
                p, ch = face_changes(lab[lo - 1], lab[lo])
                counts.face[ax][0] += p
                counts.face[ax][1] += ch
    return {axis: r["ratio"] for axis, r in counts.report().items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--crop", type=int, default=250)
    ap.add_argument("--block", type=int, default=128)
    ap.add_argument("--overlap", type=int, default=32)
    ap.add_argument("--rule", default="contained", choices=["contained", "mutual"])
    ap.add_argument("--slab", type=int, default=8)
    ap.add_argument("--canvas", help="saved canvas labels (.npy) of the same crop")
    ap.add_argument(
        "--job", help="score this finished job output (.ome.zarr) instead of running one"
    )
    ap.add_argument("--model", default=None)
    ap.add_argument("--precision", default="bf16")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--workers", type=int, default=1)
    args = ap.parse_args()

    from skimage.metrics import adapted_rand_error, variation_of_information

    from napari_connectome.ffn.checkpoint import import_google_checkpoint, load_model
    from napari_connectome.ffn.inference import segment_region
    from napari_connectome.ffn.options import options_for_model
    from napari_connectome.ffn.runner import worker_device
    from napari_connectome.jobs.pipeline import run_job
    from napari_connectome.jobs.spec import load_spec, parse_spec

    tmp = Path(tempfile.mkdtemp(prefix="bench-ffn-arand-"))
    c = args.crop
    with h5py.File(SHARED / "fib25-training-sample2" / "fib25_training_sample2.h5") as f:
        raw = f["raw"][:c, :c, :c]
        gt = f["labels"][:c, :c, :c]
    device = worker_device(args.device)

    def model_dir() -> str:  # imported only when something is segmented here
        if args.model is None:
            args.model = str(tmp / "google-fib25")
            import_google_checkpoint(
                SHARED / "google-ffn-fib25" / "model.ckpt-27465036", args.model
            )
        return args.model

    t0 = time.perf_counter()
    if args.canvas:
        canvas = np.load(args.canvas, allow_pickle=False)
        if canvas.shape != raw.shape:
            raise SystemExit(f"--canvas has shape {canvas.shape}, the crop is {raw.shape}")
    else:
        net, config = load_model(model_dir(), device=device)
        canvas = segment_region(
            raw, net, config, options_for_model(config), device=device, precision=args.precision
        ).labels
    t_canvas = time.perf_counter() - t0

    import zarr

    t0 = time.perf_counter()
    if args.job:
        out = Path(args.job)
        state = json.loads((out / "_job" / "state.json").read_text())
        seams, n_blocks = (
            state.get("seams", {}),
            len(list((out / "_job" / "blocks").glob("*.json"))),
        )
        spec = load_spec(out / "_job" / "spec.yaml")  # what the line reports is the job's own
        args.block, args.overlap = spec.block_shape[0], spec.overlap[0]
        args.rule, args.slab = spec.match.rule, spec.match.slab
        args.precision = spec.segmenter.precision
    else:
        vol = tmp / "crop.h5"
        with h5py.File(vol, "w") as f:
            f["raw"] = raw
            f["raw"].attrs["resolution_nm_zyx"] = [10, 10, 10]
        out = tmp / "job.ome.zarr"
        spec = parse_spec(
            {
                "name": "ffn-arand",
                "input": f"{vol}:raw",
                "output": str(out),
                "block_shape": [args.block] * 3,
                "overlap": [args.overlap] * 3,
                "segmenter": {
                    "kind": "ffn",
                    "model": model_dir(),
                    "precision": args.precision,
                    "device": device,
                },
                "backend": {"kind": "local", "workers": args.workers},
                "match": {"rule": args.rule, "slab": args.slab},
                "pyramid_levels": 1,
            }
        )
        res = run_job(spec)
        seams, n_blocks = res.seams, res.blocks_total
    t_job = time.perf_counter() - t0
    job = zarr.open_array(str(out / "0"))[:]
    if job.shape != raw.shape:
        raise SystemExit(f"the job's output has shape {job.shape}, the crop is {raw.shape}")
    google = np.load(SHARED / "google-ffn-fib25" / "sample-training2.npz")["segmentation"][
        :c, :c, :c
    ]
    a = lambda x: x.astype(np.int64)  # noqa: E731
    arand = adapted_rand_error(a(canvas), a(job))[0]
    vi = variation_of_information(a(canvas), a(job), ignore_labels=(0,))
    print(
        json.dumps(
            {
                "figure": "jobs_ffn_blockwise_vs_canvas",
                "crop": c,
                "block": args.block,
                "overlap": args.overlap,
                "rule": args.rule,
                "slab": args.slab,
                "canvas": args.canvas or "computed",
                "job": args.job or "computed",
                "blocks": n_blocks,
                "precision": args.precision,
                "device": device,
                "arand_job_vs_canvas": round(float(arand), 4),
                "vi_split_merge_job_vs_canvas": [round(float(v), 4) for v in vi],
                "arand_job_vs_google_run": round(
                    float(adapted_rand_error(a(google), a(job))[0]), 4
                ),
                "arand_google_run_vs_canvas": round(
                    float(adapted_rand_error(a(canvas), a(google))[0]), 4
                ),
                "arand_canvas_vs_google_run": round(
                    float(adapted_rand_error(a(google), a(canvas))[0]), 4
                ),
                "seams": seams,
                "seam_ratios_canvas": seam_check_of(a(canvas), args.block),
                "seam_ratios_google_run": seam_check_of(a(google), args.block),
                "face_cuts_job_vs_canvas": face_cuts(a(canvas), a(job), args.block),
                "face_cuts_google_run_vs_canvas": face_cuts(a(canvas), a(google), args.block),
                "arand_canvas_vs_gt": round(float(adapted_rand_error(a(gt), a(canvas))[0]), 4),
                "arand_job_vs_gt": round(float(adapted_rand_error(a(gt), a(job))[0]), 4),
                "vi_job_vs_gt": round(
                    float(sum(variation_of_information(a(gt), a(job), ignore_labels=(0,)))), 3
                ),
                "segments_canvas": int(len(np.unique(canvas)) - 1),
                "segments_job": int(len(np.unique(job)) - 1),
                "canvas_s": round(t_canvas, 1),
                "job_s": round(t_job, 1),
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
