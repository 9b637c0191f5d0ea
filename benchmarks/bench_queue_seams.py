"""Block seams in the proofreading queue, and a job's agglomerated result beside one canvas's.

    nice .venv/bin/python benchmarks/bench_queue_seams.py [--crop 0:128,0:128,0:128]
        [--block 64] [--overlap 8] [--model DIR] [--workers 2] [--items 300]

On a crop of FIB-25 training_sample2 with the shipped model (or ``--model``), it runs:

1. a blockwise job (local backend, ``block``^3 blocks with ``overlap`` context) with an
   ``agglomerate:`` section, as a user's job spec would: the job's output, its seam check, and the
   agglomeration that weighs the job's block faces;
2. one canvas over the same crop (``segment_region``, its FFN claim stored as ``segment``
   stores it), agglomerated the same way.

Both are agglomerated twice: with the FFN claim (the default: the job's blocks store theirs) and
on the EM evidence alone (``claim=False``).

Lines (one JSON each): ``job`` and ``canvas`` (seconds, VI / ARAND against the ground truth
before and after agglomeration, per variant); ``blockwise_vs_canvas`` (ARAND / VI between the two
agglomerated results, per variant: issue 14's "within ARAND 0.02"); ``seams`` (how many pairs left apart the seam check
flags, and how many of them are real errors against the others); ``queue`` per variant (with and
without the seam check): the real-error fraction of the first 40 / 100 items and VI after 10, 20,
40, 60, 100 edits of the oracle of bench_agglomerate_queue.py. Writes only under a temporary
folder.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_agglomerate import H5, cpu_name, scores
from bench_agglomerate_queue import Truth, follow, truth_of_candidates


def emit(**kw) -> None:
    print(json.dumps({"bench": "queue_seams", "cpu": cpu_name(), **kw}), flush=True)


def parse_crop(text: str) -> tuple[slice, ...]:
    parts = [p.split(":") for p in text.split(",")]
    return tuple(slice(int(a), int(b)) for a, b in parts)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--crop", default="0:128,0:128,0:128")
    ap.add_argument("--block", type=int, default=64)
    ap.add_argument("--overlap", type=int, default=8)
    ap.add_argument("--model", default="default")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threshold", type=float, default=0.65)
    ap.add_argument("--items", type=int, default=300)
    ap.add_argument("--keep", help="folder to keep the outputs in (default: a temporary one)")
    args = ap.parse_args(argv)
    import h5py
    import zarr
    from skimage.metrics import adapted_rand_error, variation_of_information

    from napari_connectome.agglomerate import agglomerate
    from napari_connectome.agglomerate.queue import (
        ProofreadQueue,
        apply_agglomeration,
        read_candidates,
    )
    from napari_connectome.ffn import zoo
    from napari_connectome.ffn.checkpoint import load_model
    from napari_connectome.ffn.inference import segment_region
    from napari_connectome.ffn.options import options_for_model
    from napari_connectome.ffn.segment_volume import write_claim
    from napari_connectome.jobs.agglomerate_phase import agglomerate_output
    from napari_connectome.jobs.pipeline import run_job
    from napari_connectome.jobs.spec import parse_spec
    from napari_connectome.proofread.reference import create_project
    from napari_connectome.proofread.session import ProofreadSession
    from napari_connectome.volumes import open_volume, write_ome_zarr

    crop = parse_crop(args.crop)
    with h5py.File(H5, "r") as f:
        raw, gt = f["raw"][crop], f["labels"][crop]
    model = str(zoo.default_model()) if args.model == "default" else args.model
    tmp_obj = None if args.keep else tempfile.TemporaryDirectory()
    tmp = Path(args.keep or tmp_obj.name)
    tmp.mkdir(parents=True, exist_ok=True)
    vol = tmp / "crop.h5"
    with h5py.File(vol, "w") as f:
        f.create_dataset("raw", data=raw, chunks=(64, 64, 64))
        f["raw"].attrs["resolution_nm_zyx"] = [10, 10, 10]
    a64 = lambda x: np.asarray(x).astype(np.int64)  # noqa: E731

    # 1. the job ---------------------------------------------------------------------------
    out = tmp / "job.ome.zarr"
    spec = parse_spec(
        {
            "name": "queue-seams",
            "input": f"{vol}:raw",
            "output": str(out),
            "block_shape": [args.block] * 3,
            "overlap": [args.overlap] * 3,
            "segmenter": {"kind": "ffn", "model": model, "precision": "auto"},
            "backend": {"kind": "local", "workers": args.workers},
            "pyramid_levels": 1,
            "agglomerate": {"threshold": args.threshold},
        }
    )
    t0 = time.perf_counter()
    res = run_job(spec)
    t_job = time.perf_counter() - t0
    job_dest = agglomerate_output(spec)
    job_seg = np.asarray(open_volume(str(out)).data)
    job_agg = np.asarray(open_volume(str(job_dest)).data)
    meta = json.loads((job_dest / "agglomeration.json").read_text())
    job_em_dest = tmp / "job-em-only.ome.zarr"
    agglomerate(
        open_volume(str(out)), open_volume(f"{vol}:raw"), job_em_dest,
        threshold=args.threshold, claim=False,
    )  # fmt: skip
    job_em = np.asarray(open_volume(str(job_em_dest)).data)
    emit(
        what="job",
        crop=args.crop,
        block=args.block,
        overlap=args.overlap,
        blocks=res.blocks_total,
        seconds=round(t_job, 1),
        agglomerate_seconds=meta["seconds"]["total"],
        seam_check=res.seams,
        seams=meta["seams"],
        claim=meta["claim"] is not None,
        output=scores(job_seg, gt),
        agglomerated=scores(job_agg, gt),
        agglomerated_em_only=scores(job_em, gt),
    )

    # 2. one canvas --------------------------------------------------------------------------
    import torch

    torch.set_num_threads(args.workers)
    net, config = load_model(model)
    t0 = time.perf_counter()
    result = segment_region(raw, net, config, options_for_model(config))
    t_canvas = time.perf_counter() - t0
    canvas = result.labels
    canvas_path = tmp / "canvas.ome.zarr"
    write_ome_zarr(canvas.astype(np.uint64), canvas_path, voxel_size_nm=(10,) * 3, labels=True)
    write_claim(canvas_path, result.claim)
    agglomerated = {}
    for variant, claim in (("claim", None), ("em_only", False)):
        dest = tmp / f"canvas-agglomerated-{variant}.ome.zarr"
        agglomerate(
            open_volume(str(canvas_path)), open_volume(f"{vol}:raw"), dest,
            threshold=args.threshold, claim=claim,
        )  # fmt: skip
        agglomerated[variant] = np.asarray(open_volume(str(dest)).data)
    canvas_agg = agglomerated["claim"]
    emit(
        what="canvas",
        seconds=round(t_canvas, 1),
        output=scores(canvas, gt),
        agglomerated=scores(canvas_agg, gt),
        agglomerated_em_only=scores(agglomerated["em_only"], gt),
    )
    pairs = (
        ("output", job_seg, canvas),
        ("agglomerated", job_agg, canvas_agg),
        ("agglomerated_em_only", job_em, agglomerated["em_only"]),
    )
    for name, x, y in pairs:
        emit(
            what="blockwise_vs_canvas",
            of=name,
            arand=round(float(adapted_rand_error(a64(y), a64(x))[0]), 4),
            vi=round(float(sum(variation_of_information(a64(y), a64(x), ignore_labels=(0,)))), 4),
        )

    # 3. the queue with and without the seam check -------------------------------------------
    sv = np.asarray(open_volume(str(job_dest / "supervoxels")).data)
    truth = Truth(sv, gt)
    sc = zarr.open_group(str(job_dest / "scores"), mode="r")
    ids, seg_of = np.asarray(sc["segment_ids"][:]), np.asarray(sc["segment_of"][:])
    cand = read_candidates(job_dest)
    same = truth_of_candidates(cand, truth, ids, seg_of)
    apart = ~cand.merged
    flagged = apart & (cand.seam >= 0.05)
    emit(
        what="seams",
        pairs_apart=int(apart.sum()),
        flagged=int(flagged.sum()),
        flagged_one_body=int((flagged & same).sum()),
        others_apart_one_body=int((apart & ~flagged & same).sum()),
        flagged_real_error_rate=round(float(same[flagged].mean()), 3) if flagged.any() else None,
        other_apart_real_error_rate=round(float(same[apart & ~flagged].mean()), 3),
    )
    for name, use in (("with the seam check", True), ("contact evidence only", False)):
        queue = ProofreadQueue(job_dest, seams=use)
        project = create_project(
            tmp / f"project-{use}",
            str(job_dest / "supervoxels"),
            image=f"{vol}:raw",
            region_graph=job_dest / "region_graph",
        )
        with ProofreadSession.open(project) as session:
            apply_agglomeration(session, job_dest)
            follow(queue, session, truth, name, args.items)
    return 0


if __name__ == "__main__":
    sys.exit(main())
