"""FFN model management: the ``import-checkpoint`` and ``models`` commands."""

from __future__ import annotations

import argparse
import json

from napari_connectome.cli._args import finite_float, positive_finite_float


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "import-checkpoint",
        help="convert a google/ffn TensorFlow checkpoint into a napari-connectome model directory",
        description=(
            "Read a google/ffn ConvStack3DFFNModel TensorFlow checkpoint (TF_PREFIX.index + "
            "TF_PREFIX.data-*) without TensorFlow and write MODEL_DIR with model.safetensors and "
            "config.json. FOV and deltas come from TF_PREFIX.meta when present."
        ),
    )
    p.add_argument(
        "tf_prefix", metavar="TF_PREFIX", help="checkpoint prefix, e.g. model.ckpt-27465036"
    )
    p.add_argument("model_dir", metavar="MODEL_DIR", help="output model directory (must not exist)")
    p.add_argument(
        "--fov", help="field of view z,y,x (e.g. 33,33,33); default: from the .meta graph"
    )
    p.add_argument(
        "--deltas", help="FOV move step z,y,x (e.g. 8,8,8); default: from the .meta graph"
    )
    p.add_argument(
        "--image-mean", type=finite_float, default=128.0, help="image normalisation mean (128)"
    )
    p.add_argument(
        "--image-stddev",
        type=positive_finite_float,
        default=33.0,
        help="image normalisation stddev, > 0 (33)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing model directory")
    p.set_defaults(func=_import_checkpoint)

    m = subparsers.add_parser("models", help="list the models of the zoo and the shipped ones")
    m.add_argument("--json", action="store_true", help="print JSON instead of a table")
    m.set_defaults(func=_models)


def _import_checkpoint(args: argparse.Namespace) -> int:
    from napari_connectome.ffn.checkpoint import import_google_checkpoint

    cfg = import_google_checkpoint(
        args.tf_prefix,
        args.model_dir,
        fov_size=args.fov,
        deltas=args.deltas,
        image_mean=args.image_mean,
        image_stddev=args.image_stddev,
        overwrite=args.overwrite,
    )
    a = cfg.architecture
    print(
        f"wrote {args.model_dir}: depth {a.depth}, {a.features} features, fov {a.fov_size} "
        f"(from {cfg.provenance['fov_size_from']}), deltas {a.deltas} "
        f"(from {cfg.provenance['deltas_from']})"
    )
    return 0


def _models(args: argparse.Namespace) -> int:
    from napari_connectome.ffn.zoo import list_models

    rows = list_models()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for r in rows:
        state = "cached" if r["cached"] else "downloads on first use"
        print(f"{r['name']:<20} {r['source']:<8} {state:<24} {r.get('description', r['location'])}")
    return 0
