"""``napari-connectome agglomerate SEG EM DEST``: supervoxels, scored region graph and
agglomerated labels of a segmentation (see napari_connectome.agglomerate and
docs/agglomeration.md)."""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path
from typing import Any

from napari_connectome.cli._args import (
    nonnegative_int,
    positive_finite_float,
    positive_int,
    probability,
    thread_count,
)
from napari_connectome.cli._progress import add_progress_flags, cli_progress


def register(subparsers: Any) -> None:
    from napari_connectome.agglomerate.run import (
        DEFAULT_BAND,
        DEFAULT_BATCH,
        DEFAULT_CLAIM_WEIGHT,
        DEFAULT_MAX_RESEG,
        DEFAULT_SEED_DISTANCE,
        DEFAULT_THRESHOLD,
    )
    from napari_connectome.agglomerate.seg_model import OWN_BAND

    p = subparsers.add_parser(
        "agglomerate",
        help="merge touching segments by boundary evidence (and FFN resegmentation): "
        "supervoxels, scored graph and agglomerated labels",
        description="Fill the unsegmented voxels of SEG by a seeded watershed on EM, compute "
        "the region graph and a merge score per contact, and merge by mean-affinity "
        "agglomeration down to --threshold. DEST (a new OME-Zarr) holds the agglomerated labels, "
        "DEST/supervoxels, DEST/region_graph and DEST/scores. Nothing is written unless every "
        "input is valid.",
    )
    p.add_argument("segmentation", metavar="SEG", help="segmentation to refine (any volume)")
    p.add_argument("em", metavar="EM", help="EM volume SEG was made from (same shape)")
    p.add_argument("dest", metavar="DEST", help="output OME-Zarr to create (e.g. agg.ome.zarr)")
    p.add_argument(
        "--threshold",
        type=probability,
        default=DEFAULT_THRESHOLD,
        help=f"merge while the best affinity is at least this (0..1, default {DEFAULT_THRESHOLD})",
    )
    p.add_argument(
        "--model",
        help="FFN model directory or zoo name for resegmentation scores, or none (default: the "
        "model that made SEG where SEG is its over-segmentation, from `segment --oversegment` "
        "or a job with `oversegment`, and the model is on this machine; else none). Slow on a CPU",
    )
    p.add_argument(
        "--band",
        type=probability,
        default=None,
        help="resegment contacts whose score is within this of the threshold, nearest first "
        f"(default: {OWN_BAND:g}, every contact, for an over-segmentation and the model that "
        f"made it; else {DEFAULT_BAND})",
    )
    p.add_argument(
        "--max-reseg",
        type=nonnegative_int,
        default=DEFAULT_MAX_RESEG,
        help=f"resegment at most this many contacts, nearest the threshold first "
        f"(default {DEFAULT_MAX_RESEG})",
    )
    p.add_argument(
        "--no-fill",
        action="store_true",
        help="leave unsegmented voxels (0) as they are instead of filling them",
    )
    p.add_argument(
        "--seed-distance",
        type=positive_finite_float,
        default=DEFAULT_SEED_DISTANCE,
        help="unsegmented blobs farther than this (voxels of the finest axis: distances count "
        "nm, so thick sections count several) from every segment become new supervoxels "
        f"(default {DEFAULT_SEED_DISTANCE:g})",
    )
    p.add_argument(
        "--no-claim",
        action="store_true",
        help="ignore the FFN claim that `segment` stores with its labels (SEG/ffn_claim)",
    )
    p.add_argument(
        "--claim-weight",
        type=probability,
        default=DEFAULT_CLAIM_WEIGHT,
        help="share of the FFN claim in the affinity where SEG has one (0..1, default "
        f"{DEFAULT_CLAIM_WEIGHT:g}; 0: EM evidence only)",
    )
    p.add_argument(
        "--precision",
        default="auto",
        choices=["auto", "fp32", "bf16", "fp16"],
        help="FFN precision for resegmentation (default auto)",
    )
    p.add_argument(
        "--batch",
        type=positive_int,
        default=DEFAULT_BATCH,
        help=f"contacts resegmented at once (default {DEFAULT_BATCH})",
    )
    p.add_argument(
        "--device",
        default="auto",
        help="where resegmentation runs: auto (a GPU where there is one, on each Dask worker), "
        "cpu, cuda or cuda:N",
    )
    p.add_argument("--threads", type=thread_count, help="CPU threads for torch (default: all)")
    p.add_argument("--scheduler", metavar="ADDRESS", help="run the blocks on this Dask scheduler")
    p.add_argument("--workers", type=positive_int, help="local cluster worker processes")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier agglomerate DEST")
    p.add_argument(
        "--reuse",
        metavar="PREVIOUS",
        help="an earlier agglomerate output of the same SEG: reuse its supervoxels, region graph "
        "and scores and run only the rule at --threshold (seconds instead of minutes)",
    )
    add_progress_flags(p)
    p.set_defaults(func=cmd_agglomerate)

    c = subparsers.add_parser(
        "calibrate-queue",
        help="fit the proofreading queue's ranking on ground truth of your own data",
        description="Fit the proofreading queue's calibration (the chance the rule is wrong, "
        "from the contact's features) on agglomerate outputs and ground truth over the same "
        "regions, and write it as JSON for the queue panel (its Calibration field) or "
        "ProofreadQueue(dest, calibration=load_calibration(FILE)). Ground truth may cover part "
        "of the volume (0 = not annotated): decisions whose sides it does not cover are left "
        "out. With two or more outputs it also says how each ranks with a calibration fitted "
        "on the others.",
    )
    c.add_argument(
        "pairs",
        nargs="+",
        metavar="DEST GT",
        help="an agglomerate output and its ground truth (a volume of the same shape, e.g. "
        "crop.h5:labels), one or more pairs",
    )
    c.add_argument("--out", required=True, help="calibration file to write (JSON)")
    c.add_argument(
        "--shape",
        action="store_true",
        help="weigh the shape rule's two features too (docs/agglomeration.md#the-shape-rule)",
    )
    c.add_argument(
        "--min-annotated",
        type=positive_int,
        default=None,
        help="annotated voxels a side needs before its ground-truth body counts (default 100)",
    )
    c.add_argument("--overwrite", action="store_true", help="replace a calibration file")
    add_progress_flags(c)
    c.set_defaults(func=cmd_calibrate_queue)


def cmd_calibrate_queue(args: argparse.Namespace) -> int:
    from napari_connectome.agglomerate import calibrate
    from napari_connectome.errors import DataWarning, UserInputError
    from napari_connectome.volumes import open_volume
    from napari_connectome.volumes.output_safety import refuse_overlap
    from napari_connectome.volumes.sources import absolute_source
    from napari_connectome.volumes.volume import named_as_image

    if len(args.pairs) % 2:
        raise UserInputError(
            f"give agglomerate outputs and ground truth in pairs (DEST GT ...), not "
            f"{len(args.pairs)} paths"
        )
    pairs = [
        (str(Path(d).expanduser().resolve()), absolute_source(gt))
        for d, gt in zip(args.pairs[::2], args.pairs[1::2])
    ]
    if len(set(pairs)) < len(pairs):
        raise UserInputError(
            "a DEST GT pair is given twice: each pair counts once in the fit, and the "
            "cross-fitted figures would judge an output by a fit on itself"
        )
    out = Path(args.out).expanduser()
    refuse_overlap(out, [p for pair in pairs for p in pair])
    if out.exists() and not args.overwrite:
        raise UserInputError(f"{out} exists; choose another file or pass --overwrite")
    if not out.parent.is_dir():
        raise UserInputError(f"the folder {out.parent} does not exist; create it first")
    for dest, gt in pairs:
        made_from = _inputs_of(Path(dest))
        if gt in made_from:
            raise UserInputError(
                f"{gt} is the {made_from[gt]} {dest} was made from, not ground truth: give the "
                "annotated bodies of the same region"
            )
    truths = [open_volume(gt) for _, gt in pairs]
    for (_, text), gt in zip(pairs, truths):
        if named_as_image(text):
            warnings.warn(
                f"the ground truth {text} is named like EM ({gt.dtype}), not like labels: check "
                "that it holds annotated bodies",
                DataWarning,
                stacklevel=1,
            )
    update, close = cli_progress(args, "calibrate-queue")
    min_annotated = args.min_annotated or calibrate.MIN_ANNOTATED
    try:
        judged = [
            calibrate.judge_output(dest, gt, min_annotated=min_annotated, progress=update)
            for (dest, _), gt in zip(pairs, truths)
        ]
    finally:
        close()
    cal = calibrate.fit_on_truth(judged, shape=args.shape)
    cross = None
    if len(judged) > 1:
        cross = []
        for k, j in enumerate(judged):
            others = [o for i, o in enumerate(judged) if i != k]
            try:
                fit = calibrate.fit_on_truth(others, shape=args.shape)
            except UserInputError:
                cross.append({"output": j.name, "figures": None})
                continue
            cross.append({"output": j.name, "figures": calibrate.figures(j, fit)})
    known = sum(int(j.known.sum()) for j in judged)
    about = {
        "fitted_on": [
            {"output": d, "ground_truth": gt, "known": int(j.known.sum())}
            for (d, gt), j in zip(pairs, judged)
        ],
        "min_annotated": min_annotated,
        "candidates": known,
        "left_out": sum(len(j.known) - int(j.known.sum()) for j in judged),
        "in_sample": [calibrate.figures(j, cal) for j in judged],
        "cross_fitted": cross,
    }
    calibrate.save_calibration(cal, out, about=about, overwrite=args.overwrite)
    print(json.dumps({"calibration": str(out.resolve()), **about}))
    return 0


def _inputs_of(dest: Path) -> dict[str, str]:
    """The sources an agglomerate output was made from (its SEG and EM), as recorded."""
    try:
        meta = json.loads((dest / "agglomeration.json").read_text())
    except (OSError, ValueError):
        return {}  # judge_output says what DEST is not
    return {str(meta[k]): what for k, what in (("input", "SEG"), ("em", "EM")) if meta.get(k)}


def cmd_agglomerate(args: argparse.Namespace) -> int:
    from napari_connectome.agglomerate import agglomerate
    from napari_connectome.agglomerate.reseg import check_fov_fits
    from napari_connectome.agglomerate.run import check_inputs
    from napari_connectome.cli.graph import _client
    from napari_connectome.errors import NoVoxelSizeWarning
    from napari_connectome.volumes import open_volume
    from napari_connectome.volumes.atomic import check_destination
    from napari_connectome.volumes.output_safety import refuse_overlap

    said_none = bool(args.model) and args.model.strip().lower() == NO_MODEL
    if said_none:
        args.model = None
    chosen = None if said_none or args.reuse else _choose_model(args.model, args.segmentation)
    if chosen is None and not args.reuse:
        _refuse_reseg_options(
            args,
            "without a model there is no FFN resegmentation" + (" (--model none)" * said_none),
            "add --model MODEL, or leave them out",
        )
    with warnings.catch_warnings(record=True) as seg_warnings:
        warnings.simplefilter("always")
        seg = open_volume(args.segmentation)
    em = open_volume(args.em)
    for w in seg_warnings:  # SEG's "1 nm assumed" is not what is used when the EM has a size
        if issubclass(w.category, NoVoxelSizeWarning) and em.voxel_size_nm != (1.0, 1.0, 1.0):
            continue
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    check_inputs(seg, em)
    dest = Path(args.dest).expanduser()
    refuse_overlap(dest, [args.segmentation, args.em, chosen[1] if chosen else None])
    check_destination(dest, args.overwrite)
    if args.reuse:
        return _reuse(args, seg, em, dest)
    model, model_name, model_source = None, None, None
    if chosen is not None:
        from napari_connectome.ffn.checkpoint import load_model

        model_name, model_source = chosen  # Dask workers load it from model_source
        model = load_model(model_source, device="cpu")
        check_fov_fits(seg.shape, model[1].fov_size, model[1].deltas)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    with _client(args.scheduler) as client:
        update, close = cli_progress(args, "agglomerate")
        try:
            out = agglomerate(
                seg,
                em,
                dest,
                threshold=args.threshold,
                model=model,
                model_name=model_name,
                model_source=model_source,
                fill=not args.no_fill,
                seed_distance=args.seed_distance,
                claim=False if args.no_claim else None,
                claim_weight=args.claim_weight,
                band=args.band,
                max_reseg=args.max_reseg,
                precision=args.precision,
                batch=args.batch,
                device=args.device,
                client=client,
                workers=args.workers,
                overwrite=args.overwrite,
                progress=update,
            )
        finally:
            close()
    return _report(out)


NO_MODEL = "none"  # --model none: no resegmentation, even where SEG records its model


def _choose_model(given: str | None, segmentation: str) -> tuple[str, Path] | None:
    """(name, folder) of the resegmentation model: the one given, else the one that made SEG
    where SEG is its over-segmentation and the model is on this machine (said on stderr either
    way), else None (one FFN pass is not resegmented by default: seg_model.py says why)."""
    import sys
    import warnings

    from napari_connectome.agglomerate.seg_model import recorded_model
    from napari_connectome.errors import DataWarning
    from napari_connectome.ffn.zoo import get_model

    if given:
        return given, get_model(given)
    made = recorded_model(segmentation)
    if made is None or not made.oversegment:
        return None
    if made.folder is None:
        warnings.warn(
            f"SEG is the over-segmentation of {made.describe()}, which is not on this machine: "
            "agglomerating without FFN resegmentation (give --model MODEL to resegment, "
            "--model none to say so)",
            DataWarning,
            stacklevel=2,
        )
        return None
    print(
        f"napari-connectome agglomerate: resegmenting with the model that made SEG, "
        f"{made.describe()} (--model none: without)",
        file=sys.stderr,
    )
    return made.name, made.folder


def _reseg_flags(args: argparse.Namespace) -> list[str]:
    """The resegmentation options given other values than their defaults."""
    from napari_connectome.agglomerate.run import DEFAULT_BATCH, DEFAULT_MAX_RESEG

    return [
        flag
        for flag, given in (
            ("--band", args.band is not None),
            ("--max-reseg", args.max_reseg != DEFAULT_MAX_RESEG),
            ("--precision", args.precision != "auto"),
            ("--batch", args.batch != DEFAULT_BATCH),
            ("--device", args.device != "auto"),
        )
        if given
    ]


def _refuse_reseg_options(args: argparse.Namespace, why: str, what_to_do: str) -> None:
    from napari_connectome.errors import UserInputError

    flags = _reseg_flags(args)
    if flags:
        raise UserInputError(f"{why}, so {', '.join(flags)} would change nothing: {what_to_do}")


def _report(out: Path, *extra: str) -> int:
    """One JSON line: where the result is and its counts (``extra``: more keys of its meta)."""
    meta = json.loads((out / "agglomeration.json").read_text())
    keys = (*extra, "n_supervoxels", "n_edges", "n_merges", "n_segments", "n_resegmented")
    keys += tuple(k for k in ("model", "band") if k in meta)  # which model judged, how widely
    claim = meta.get("claim")  # which FFN claim weighed in (null: the EM evidence alone)
    print(json.dumps({"agglomerated": str(out), **{k: meta[k] for k in keys}, "claim": claim}))
    return 0


def _reuse(args: argparse.Namespace, seg: Any, em: Any, dest: Path) -> int:
    """``--reuse PREVIOUS``: only the rule runs; options of the passes it skips are refused."""
    from napari_connectome.agglomerate.reuse import reagglomerate
    from napari_connectome.agglomerate.run import DEFAULT_CLAIM_WEIGHT, DEFAULT_SEED_DISTANCE
    from napari_connectome.cli.graph import _client
    from napari_connectome.errors import UserInputError

    skipped = [
        flag
        for flag, given in (
            ("--model", bool(args.model)),
            ("--no-fill", args.no_fill),
            ("--seed-distance", args.seed_distance != DEFAULT_SEED_DISTANCE),
            ("--no-claim", args.no_claim),
            ("--claim-weight", args.claim_weight != DEFAULT_CLAIM_WEIGHT),
        )
        if given
    ] + _reseg_flags(args)
    if skipped:
        raise UserInputError(
            f"--reuse keeps the earlier output's supervoxels and scores, so {', '.join(skipped)} "
            "would change nothing: leave it out, or run agglomerate without --reuse"
        )
    with _client(args.scheduler) as client:
        update, close = cli_progress(args, "agglomerate")
        try:
            out = reagglomerate(
                seg,
                em,
                dest,
                args.reuse,
                threshold=args.threshold,
                client=client,
                workers=args.workers,
                overwrite=args.overwrite,
                progress=update,
            )
        finally:
            close()
    return _report(out, "reused")
