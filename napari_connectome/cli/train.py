"""``napari-connectome train IMAGE LABELS OUT``: train or fine-tune an FFN on dense ground truth."""

from __future__ import annotations

import argparse
import sys

from napari_connectome.cli._args import (
    finite_float,
    nonnegative_int,
    positive_finite_float,
    positive_int,
    thread_count,
)
from napari_connectome.cli._progress import add_progress_flags, cli_progress


def _zyx(text: str) -> list[int]:
    parts = [p for p in text.replace("x", ",").split(",") if p.strip()]
    try:
        vals = [int(p) for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers z,y,x, got {text!r}") from None
    if len(vals) == 1:
        vals *= 3
    if len(vals) != 3:
        raise argparse.ArgumentTypeError(f"expected three integers z,y,x, got {text!r}")
    return vals


def _roi(text: str) -> list[int]:
    try:
        axes = [a.split(":") for a in text.split(",")]
        vals = [int(v) for pair in axes for v in pair]
    except ValueError:
        raise argparse.ArgumentTypeError(f"roi must be z0:z1,y0:y1,x0:x1, got {text!r}") from None
    if len(vals) != 6 or any(len(a) != 2 for a in axes):
        raise argparse.ArgumentTypeError(f"roi must be z0:z1,y0:y1,x0:x1, got {text!r}")
    return vals


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train",
        help="train or fine-tune an FFN on an image with dense ground-truth labels",
        description=(
            "Train a conv-stack FFN (google/ffn semantics) on IMAGE with ground truth LABELS, "
            "writing checkpoints, metrics.csv/png and the latest model to OUT/model. Run under "
            "`torchrun --nproc-per-node N` for multi-GPU training. See docs/training.md."
        ),
    )
    p.add_argument("image", metavar="IMAGE", help="EM volume source, e.g. data.h5:raw")
    p.add_argument("labels", metavar="LABELS", help="ground truth source (0 = unlabelled)")
    p.add_argument("out", metavar="OUT", help="run folder (must be new, or use --resume)")
    p.add_argument("--roi", type=_roi, help="train on z0:z1,y0:y1,x0:x1 only")
    p.add_argument("--resume", action="store_true", help="continue the run in OUT")
    p.add_argument("--init", dest="init_model", help="fine-tune from this model dir or zoo name")
    p.add_argument("--steps", type=nonnegative_int, help="optimizer steps in all (10000)")
    p.add_argument(
        "--batch", dest="batch_size", type=positive_int, help="FOVs per step and process (4)"
    )
    p.add_argument("--depth", type=positive_int, help="residual modules (12)")
    p.add_argument("--features", type=positive_int, help="feature maps per conv (32)")
    p.add_argument("--fov", dest="fov_size", type=_zyx, help="field of view z,y,x (33,33,33)")
    p.add_argument("--deltas", type=_zyx, help="FOV move step z,y,x (8,8,8)")
    p.add_argument("--image-mean", type=finite_float, help="normalisation mean (128)")
    p.add_argument("--image-stddev", type=positive_finite_float, help="normalisation stddev (33)")
    p.add_argument("--optimizer", choices=["adam", "sgd"], help="adam (default) or sgd")
    p.add_argument(
        "--lr", dest="learning_rate", type=positive_finite_float, help="learning rate (1e-3)"
    )
    p.add_argument("--val-fraction", type=finite_float, help="validation share of the ROI (0.2)")
    p.add_argument(
        "--min-size", type=nonnegative_int, help="smallest object to centre examples on (1000)"
    )
    p.add_argument("--max-moves", type=nonnegative_int, help="FOV moves per example (6)")
    p.add_argument("--no-permute", action="store_true", help="no axis-permutation augmentation")
    p.add_argument("--no-reflect", action="store_true", help="no reflection augmentation")
    p.add_argument("--val-every", type=positive_int, help="validate every N steps (500)")
    p.add_argument("--log-every", type=positive_int, help="write a metrics row every N steps (50)")
    p.add_argument("--checkpoint-every", type=positive_int, help="checkpoint every N steps (1000)")
    p.add_argument("--seed", type=int, help="random seed (0)")
    p.add_argument("--threads", type=thread_count, help="torch CPU threads")
    p.add_argument("--device", help="cpu (default), cuda or cuda:N")
    p.add_argument(
        "--precision",
        choices=["auto", "fp32", "bf16"],
        help="autocast of the forward pass: auto (default: bf16 where the CPU or GPU has native "
        "bf16, ~3x faster there; fp32 otherwise), fp32 or bf16",
    )
    add_progress_flags(p)
    p.set_defaults(func=_train)


_FIELDS = (
    "roi",
    "init_model",
    "steps",
    "batch_size",
    "depth",
    "features",
    "fov_size",
    "deltas",
    "image_mean",
    "image_stddev",
    "optimizer",
    "learning_rate",
    "val_fraction",
    "min_size",
    "max_moves",
    "val_every",
    "log_every",
    "checkpoint_every",
    "seed",
    "threads",
    "device",
    "precision",
)


def _train(args: argparse.Namespace) -> int:
    """Options left out keep the saved run's values on --resume, the init model's architecture
    with --init, and TrainConfig's defaults otherwise."""
    from pathlib import Path

    from napari_connectome.errors import UserInputError
    from napari_connectome.ffn.training import TrainConfig, train
    from napari_connectome.ffn.training.trainer import CONFIG_NAME

    given = {k: getattr(args, k) for k in _FIELDS if getattr(args, k) is not None}
    if args.no_permute:
        given["permute_axes"] = False
    if args.no_reflect:
        given["reflect"] = False
    given["image"], given["labels"] = args.image, args.labels
    base: dict = {}
    saved = Path(args.out) / CONFIG_NAME
    if args.resume and saved.is_file():
        base = TrainConfig.load(saved).to_dict()
    elif args.init_model:
        from napari_connectome.ffn.checkpoint import load_model

        _, mcfg = load_model(args.init_model)
        a = mcfg.architecture
        base = {
            "depth": a.depth,
            "features": a.features,
            "fov_size": list(a.fov_size),
            "deltas": list(a.deltas),
            "image_mean": mcfg.image_mean,
            "image_stddev": mcfg.image_stddev,
        }
        for k in ("depth", "features", "fov_size", "deltas"):
            if k in given and given[k] != base[k]:
                raise UserInputError(
                    f"--init model has {k}={base[k]}, but {k}={given[k]} was given; fine-tuning "
                    "keeps the model's architecture"
                )
    cfg = TrainConfig(**{**base, **given})
    progress, close = cli_progress(args, "train", unit="step")
    try:
        model_dir = train(
            cfg,
            args.out,
            resume=args.resume,
            progress=progress,
            log=lambda m: print(m, file=sys.stderr),
        )
    finally:
        close()
    print(f"model: {model_dir}")
    return 0
