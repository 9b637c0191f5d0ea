"""Cut the demo's FIB-25 crop out of training_sample2 into the package's resources/samples.

The crop must lie in the z >= 125 half, which the default model ``fib25-small`` was never trained
on (its training ROI is z < 125). It is stored as a compressed ``.npz`` of plain arrays (no
pickle): ``raw`` uint8, ``labels`` (the ground-truth bodies, renumbered 1..n in uint16 so that
the file stays small), ``origin_zyx``, ``resolution_nm_zyx``, ``source`` and ``attribution``.

    .venv/bin/python scripts/make_fib25_demo_crop.py --region 191:219,168:248,96:176
    scripts/sync-root-copies  # the top-level resources/ copy
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_H5 = ROOT.parent / "shared/data/fib25-training-sample2/fib25_training_sample2.h5"
OUT = ROOT / "napari_connectome" / "resources" / "samples" / "fib25-demo-crop.npz"
HELD_OUT_Z = 125  # fib25-small trained on z < 125


def main() -> int:
    import fastremap
    import h5py

    from napari_connectome.samples import FIB25_ATTRIBUTION

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--region", required=True, help="z0:z1,y0:y1,x0:x1 in training_sample2")
    p.add_argument("--h5", type=Path, default=DEFAULT_H5)
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args()
    box = tuple(slice(*map(int, part.split(":"))) for part in args.region.split(","))
    if box[0].start < HELD_OUT_Z:
        p.error(f"the crop must start at z >= {HELD_OUT_Z} (the half fib25-small never saw)")
    with h5py.File(args.h5, "r") as f:
        raw = f["raw"][box]
        labels = f["labels"][box]
        resolution = np.asarray(f["raw"].attrs.get("resolution_nm_zyx", [10, 10, 10]), float)
    labels, _ = fastremap.renumber(labels, preserve_zero=True)
    labels = labels.astype(np.uint16)
    where = ", ".join(f"{s.start}:{s.stop}" for s in box)
    source = (
        "FIB-25 training_sample2 (janelia-flyem/neuroproof_examples, commit ce839e17: "
        f"grayscale_maps/iso.2600-2849.png and groundtruth.h5), z,y,x {where}"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        args.out,
        raw=raw,
        labels=labels,
        origin_zyx=np.array([s.start for s in box], np.int64),
        resolution_nm_zyx=resolution,
        source=np.array(source),
        attribution=np.array(FIB25_ATTRIBUTION),
    )
    size = args.out.stat().st_size
    print(f"wrote {args.out}: raw {raw.shape}, {int(labels.max())} bodies, {size / 1e6:.2f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
