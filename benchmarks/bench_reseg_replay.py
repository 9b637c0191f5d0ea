"""Which resegmented contacts matter: replay the merge rule on an agglomerate output made with
``--band 1`` (every contact scored), keeping the scores of only some contacts.

    nice .venv/bin/python benchmarks/bench_reseg_replay.py OUT:GT.h5 [OUT:GT.h5 ...]

Per output (OUT: an agglomerate output whose ``scores/reseg`` has every contact it tried; GT.h5:
an HDF5 file with the ground truth in ``labels``, e.g. the ``crop-N.h5`` that
``bench_reseg.py --keep`` writes) one JSON line: VI / ARAND and contacts scored when the rule
runs with the scores of all contacts, of those whose verdict a score can change
(``reseg.can_cross``, what agglomerate now resegments), of those within 0.1 of the threshold,
and of none. Resegmentation scores each contact on its own, so the replay is what agglomerate
gives with that selection. Reads only; writes nothing.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_agglomerate import cpu_name


def replay(out: Path, gt_file: Path) -> dict:
    import h5py
    import zarr

    from napari_connectome.agglomerate.reseg import can_cross, mix
    from napari_connectome.agglomerate.rule import mean_affinity_agglomerate
    from napari_connectome.evaluate import evaluate_segmentation

    meta = json.loads((out / "agglomeration.json").read_text())
    t = meta["threshold"]
    scores = zarr.open_group(str(out / "scores"), mode="r")
    affinity, reseg, area = (np.asarray(scores[k][:]) for k in ("affinity", "reseg", "area"))
    evidence = np.where(np.isfinite(reseg), 2 * affinity - np.nan_to_num(reseg), affinity)
    edges = out / "region_graph" / "edges"
    u, v = (np.asarray(zarr.open_array(str(edges / n), mode="r")[:], np.uint64) for n in "uv")
    sv = np.asarray(zarr.open_array(str(out / "supervoxels" / "0"), mode="r")[...])
    ids = np.unique(sv)
    ids = ids[ids > 0]
    with h5py.File(gt_file, "r") as f:
        gt = f["labels"][...]

    def score(keep: np.ndarray) -> list:
        r = np.where(keep, reseg, np.nan)
        agg = mean_affinity_agglomerate(u, v, mix(evidence, r), area, ids, t)
        order = np.argsort(agg.ids)
        keys, vals = np.asarray(agg.ids)[order], np.asarray(agg.segment_of)[order]
        labels = np.zeros_like(sv)
        nz = sv > 0
        labels[nz] = vals[np.searchsorted(keys, sv[nz])]
        e = evaluate_segmentation(labels, gt)
        return [round(e["vi"], 4), round(e["arand"], 4), int(np.isfinite(r).sum())]

    tried = np.isfinite(reseg)
    return {
        "bench": "reseg_replay",
        "cpu": cpu_name(),
        "out": str(out),
        "band": meta.get("band"),
        "all": score(tried),
        "can_cross": score(tried & can_cross(evidence, t)),
        "band_0.1": score(tried & (np.abs(evidence - t) <= 0.1)),
        "none": score(np.zeros_like(tried)),
        "columns": ["vi", "arand", "contacts scored"],
    }


def main(argv=None) -> int:
    for pair in argv if argv is not None else sys.argv[1:]:
        out, gt = pair.rsplit(":", 1)
        print(json.dumps(replay(Path(out), Path(gt))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
