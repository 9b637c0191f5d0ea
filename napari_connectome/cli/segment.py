"""``napari-connectome segment SOURCE DEST``: FFN segmentation of a volume (or a region of it).

Everything is checked before the model runs (inputs, ROI, seeds, device, the destination), and the
result is written to a hidden sibling and renamed into place, so a bad input or a crash leaves
nothing behind and an existing DEST is never touched without ``--overwrite``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from napari_connectome.cli._args import nonnegative_int, positive_int, probability, thread_count
from napari_connectome.cli._progress import add_progress_flags, cli_progress
from napari_connectome.errors import UserInputError

COUNTERS_FILE = "ffn_counters.json"


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "segment",
        help="segment a volume with a flood-filling network (OME-Zarr labels out)",
        description=(
            "Run FFN inference with google/ffn's rules on SOURCE (or its --roi) and write uint64 "
            "OME-Zarr labels (0 = background) to DEST, plus DEST/" + COUNTERS_FILE + " with the "
            "run's counters. Without --seed, objects start at the seed policy's points "
            "(default: google's PolicyPeaks); with --seed, segment k grows from the k-th seed."
        ),
    )
    p.add_argument("source", metavar="SOURCE", help="EM volume: file.h5:raw, a zarr array, TIFF...")
    p.add_argument("dest", metavar="DEST", help="output OME-Zarr (e.g. seg.ome.zarr)")
    p.add_argument("--model", help="model directory or zoo name (default: the default model)")
    p.add_argument("--roi", help="region z0:z1,y0:y1,x0:x1 in voxels (default: whole volume)")
    p.add_argument(
        "--seed",
        action="append",
        default=None,
        metavar="Z,Y,X",
        help="seed point in volume voxel coordinates; repeat for several objects",
    )
    p.add_argument("--mask", help="exclusion mask source (nonzero = never segment), same shape")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    p.add_argument(
        "--precision",
        default="auto",
        choices=["auto", "fp32", "bf16", "fp16"],
        help="autocast precision (default auto: bf16 where the CPU or GPU has native bf16, "
        "fp32 otherwise; fp16 is GPU only)",
    )
    p.add_argument(
        "--batch",
        type=positive_int,
        default=1,
        help="max FOVs per forward pass (concurrent canvases)",
    )
    p.add_argument("--compile", action="store_true", help="torch.compile the model (GPU)")
    p.add_argument(
        "--threads", type=thread_count, default=None, help="CPU threads for torch (default: all)"
    )
    p.add_argument("--seed-policy", choices=["peaks", "grid"], help="seed policy without --seed")
    for name, what in (
        ("init-activation", "probability at the seed"),
        ("pad-value", "probability of unexplored voxels"),
        ("move-threshold", "probability needed to move the FOV"),
        ("segment-threshold", "probability for a voxel to join the object"),
    ):
        p.add_argument(f"--{name}", type=probability, help=f"{what} (default: the model's)")
    p.add_argument("--min-segment-size", type=nonnegative_int, help="drop smaller objects (voxels)")
    p.add_argument(
        "--max-steps", type=positive_int, help="stop an object after this many FFN steps"
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing DEST")
    add_progress_flags(p)
    p.set_defaults(func=_segment)


def parse_roi(text: str | None, shape: tuple[int, ...]) -> tuple[slice, slice, slice]:
    """``z0:z1,y0:y1,x0:x1`` (an empty bound = the volume edge) -> slices within ``shape``."""
    if not text:
        return tuple(slice(0, s) for s in shape)  # type: ignore[return-value]
    parts = text.split(",")
    if len(parts) != 3:
        raise UserInputError(f"--roi {text!r}: give three ranges z0:z1,y0:y1,x0:x1")
    out = []
    for axis, part, n in zip("zyx", parts, shape):
        lo, sep, hi = part.partition(":")
        try:
            a = int(lo) if lo.strip() else 0
            b = int(hi) if hi.strip() else n
        except ValueError:
            raise UserInputError(f"--roi {text!r}: {part!r} is not a range like 10:200") from None
        if not sep or a < 0 or b > n or a >= b:
            raise UserInputError(
                f"--roi {text!r}: the {axis} range {part!r} must lie within 0:{n} and not be empty"
            )
        out.append(slice(a, b))
    return tuple(out)  # type: ignore[return-value]


def parse_seed(text: str) -> tuple[int, int, int]:
    try:
        vals = tuple(int(v) for v in text.replace(" ", "").split(","))
    except ValueError:
        vals = ()
    if len(vals) != 3:
        raise UserInputError(f"--seed {text!r}: give a point as z,y,x integers, e.g. 100,120,130")
    return vals  # type: ignore[return-value]


def torch_threads() -> int:
    import torch

    return int(torch.get_num_threads())


def _segment(args: argparse.Namespace) -> int:
    import numpy as np

    from napari_connectome.ffn.checkpoint import load_model
    from napari_connectome.ffn.inference import check_image, segment_region
    from napari_connectome.ffn.options import options_for_model
    from napari_connectome.ffn.runner import LockstepRunner, resolve_device
    from napari_connectome.volumes import open_volume, require_3d, write_ome_zarr
    from napari_connectome.volumes.atomic import (
        check_destination,
        commit,
        remove_path,
        temp_sibling,
    )
    from napari_connectome.volumes.output_safety import refuse_overlap

    dest = Path(args.dest).expanduser()
    model_path = args.model if args.model and Path(args.model).expanduser().exists() else None
    refuse_overlap(dest, [args.source, args.mask, model_path])
    check_destination(dest, args.overwrite)
    device = resolve_device(args.device)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    seeds = [parse_seed(s) for s in args.seed] if args.seed else None

    vol = require_3d(open_volume(args.source), "FFN segmentation")
    if vol.axes != "zyx":
        raise UserInputError(f"{args.source} has axes '{vol.axes}'; segment needs a zyx volume")
    if vol.is_labels and vol.format.startswith("ome-zarr"):
        raise UserInputError(
            f"{args.source} is an OME-Zarr label image (a segmentation), not EM; give the EM "
            "image as SOURCE"
        )
    roi = parse_roi(args.roi, vol.shape)
    start = np.array([s.start for s in roi])
    if seeds is not None:
        local = []
        for s in seeds:
            p = np.asarray(s)
            if np.any(p < 0) or np.any(p >= np.asarray(vol.shape)):
                raise UserInputError(
                    f"seed {s} (z, y, x) lies outside the volume of shape {vol.shape}"
                )
            if any(not (r.start <= v < r.stop) for v, r in zip(s, roi)):
                raise UserInputError(f"seed {s} lies outside the --roi {args.roi}")
            local.append(tuple(int(v) for v in p - start))
        seeds = local

    if args.model:
        model_dir: Any = args.model
    else:
        from napari_connectome.ffn.zoo import default_model

        model_dir = default_model()
    model, config = load_model(model_dir, device="cpu")
    overrides = {
        "init_activation": args.init_activation,
        "pad_value": args.pad_value,
        "move_threshold": args.move_threshold,
        "segment_threshold": args.segment_threshold,
        "min_segment_size": args.min_segment_size,
        "max_steps": args.max_steps,
        "seed_policy": args.seed_policy,
    }
    options = options_for_model(config, **overrides)

    # Cheap checks first (shape vs FOV), then read the region and check its values.
    roi_shape = tuple(r.stop - r.start for r in roi)
    fov = config.architecture.fov_size
    if any(s < f for s, f in zip(roi_shape, fov)):
        raise UserInputError(
            f"the model's field of view {fov} (z, y, x) is larger than the region {roi_shape}; "
            "choose a larger --roi"
        )
    what = f"{args.source} (region {roi_shape})"
    image = check_image(np.asarray(vol.data[roi]), fov, what=what, config=config)
    mask = None
    if args.mask:
        mvol = open_volume(args.mask)
        if mvol.shape != vol.shape:
            raise UserInputError(
                f"--mask {args.mask} has shape {mvol.shape} but the volume has {vol.shape}"
            )
        mask = np.asarray(mvol.data[roi]) != 0

    runner = LockstepRunner(
        model, device=device, precision=args.precision, batch=args.batch, compile=args.compile
    )
    threads = torch_threads()
    print(
        f"FFN on {runner.device}: {runner.precision_reason}; {threads} CPU "
        f"thread{'s' if threads != 1 else ''}",
        file=sys.stderr,
    )
    from napari_connectome.ffn.estimate import estimate_run

    n_seeds = None if seeds is None else len(seeds)
    estimate = estimate_run(roi_shape, runner, config, seeds=n_seeds)
    print(f"region {estimate.describe()}", file=sys.stderr)
    progress, close = cli_progress(args, "segment", unit="seed")
    try:
        result = segment_region(
            image,
            model,
            config,
            options,
            seeds=seeds,
            mask=mask,
            progress=progress,
            runner=runner,
        )
    finally:
        close()

    voxel = tuple(float(v) for v in vol.voxel_size_nm[-3:])
    offset = tuple(float(o) + float(a) * v for o, a, v in zip(vol.offset_nm[-3:], start, voxel))
    # labels and counters are assembled at a hidden sibling and renamed into place together
    tmp = temp_sibling(dest, "segment")
    try:
        write_ome_zarr(
            result.labels,
            tmp,
            voxel_size_nm=voxel,
            offset_nm=offset,
            labels=True,
            name=dest.name.split(".")[0],
        )
        report = {
            "source": str(args.source),
            "model": str(model_dir),
            "roi_zyx": [[r.start, r.stop] for r in roi],
            "device": str(runner.device),
            "precision": runner.precision,
            "precision_requested": runner.precision_requested,
            "precision_reason": runner.precision_reason,
            "options": options.to_dict(),
            "counters": result.counters,
            "objects": {
                str(k): {**v, "start_zyx": [int(a) + int(b) for a, b in zip(v["start_zyx"], start)]}
                for k, v in result.origins.items()
            },
        }
        (tmp / COUNTERS_FILE).write_text(json.dumps(report, indent=2) + "\n")
        commit(tmp, dest, args.overwrite)
    except BaseException:
        remove_path(tmp)
        raise
    c = result.counters
    print(
        f"wrote {dest}: {c.get('segments', 0)} segments, {c.get('steps', 0)} FFN steps "
        f"in {c['seconds']:.1f} s",
        file=sys.stderr,
    )
    return 0
