"""The queue's calibration for our own FFN's output: fitted on held-out crops, judged
leave-one-crop-out against the default (fitted on Google's segmentation).

    nice .venv/bin/python benchmarks/bench_queue_ffn_calibration.py KEEP_DIR

KEEP_DIR is what ``bench_reseg.py --keep KEEP_DIR`` leaves: ``crop-N.h5`` (raw, labels) and
``crop-N/agg-K.ome.zarr`` (the agglomerations of that crop's consensus: with the claim, and with
resegmentation). Each crop's outputs are ranked by a calibration fitted on every output of the
other crops, so no item is scored by a model that saw its crop; the shipped
``FFN_CALIBRATION`` is judged too (on crops of another model's output it is out of sample). Lines: ``output`` per output
and variant (real errors in the first 20 / 40 items as the queue ranks them, AUC of the chance
the rule is wrong), ``summary`` per kind of output and variant (pooled), and ``fit``: the
calibration fitted on every crop (what ``queue.FFN_CALIBRATION`` ships).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_agglomerate import cpu_name
from bench_queue_claim import judge, load, logistic


def emit(**kw) -> None:
    print(json.dumps({"bench": "queue_ffn_calibration", "cpu": cpu_name(), **kw}), flush=True)


def kind_of(dest: Path) -> str:
    meta = json.loads((dest / "agglomeration.json").read_text())
    return "resegmented" if meta.get("n_resegmented") else "claim"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("keep", type=Path)
    args = ap.parse_args(argv)
    from napari_connectome.agglomerate.queue import FFN_CALIBRATION, Calibration

    crops = sorted(p for p in args.keep.glob("crop-*") if p.is_dir())
    outs = []
    for crop in crops:
        for dest in sorted(crop.glob("agg-*.ome.zarr")):
            out = load(str(dest), f"{crop}.h5:labels")
            out["crop"], out["kind"] = crop.name, kind_of(dest)
            outs.append(out)
    default = Calibration()
    pooled: dict[tuple[str, str], list] = {}
    for out in outs:
        others = [o for o in outs if o["crop"] != out["crop"]]
        x = np.concatenate([o["x"]["queue features"] for o in others])
        y = np.concatenate([o["same"] for o in others]).astype(float)
        w = logistic(x, y)
        own = out["x"]["queue features"]
        for variant, p_same in (
            ("default calibration", default.p_same(own)),
            ("FFN_CALIBRATION as shipped", FFN_CALIBRATION.p_same(own)),
            ("fitted on the other crops", 1 / (1 + np.exp(-(w[0] + own @ w[1:])))),
        ):
            pooled.setdefault((out["kind"], variant), []).append((out, p_same))
            emit(
                what="output",
                output=out["name"],
                kind=out["kind"],
                variant=variant,
                candidates=len(p_same),
                **judge(out, p_same),
            )
    for (kind, variant), parts in pooled.items():
        merged = {
            key: np.concatenate([o[key] for o, _ in parts]) for key in ("same", "merged", "gain")
        }
        emit(
            what="summary",
            kind=kind,
            variant=variant,
            outputs=len(parts),
            **judge(merged, np.concatenate([p for _, p in parts])),
        )
    x = np.concatenate([o["x"]["queue features"] for o in outs])
    y = np.concatenate([o["same"] for o in outs]).astype(float)
    w = logistic(x, y)
    emit(
        what="fit",
        crops=len(crops),
        outputs=len(outs),
        candidates=len(y),
        bias=round(float(w[0]), 3),
        weights=[round(float(v), 3) for v in w[1:]],
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
