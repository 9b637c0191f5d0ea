"""The training loop: lockstep batches, Google's loss, Adam/SGD, validation, checkpoints, DDP.

Run folder layout (``out``)::

    train_config.json          the TrainConfig (compared on --resume)
    metrics.csv                step, split (train/val), loss, accuracy, precision, recall, speed
    metrics.png                the plot of metrics.csv (report.py), refreshed at every validation
    checkpoints/step-NNNNNNNN/ model.safetensors + config.json + optimizer.pt + state.json
    model/                     the latest weights as a plain model directory (what inference loads)

Multi-GPU: started under ``torchrun`` (``WORLD_SIZE`` > 1) each process trains on its own stream
of examples, gradients are averaged by DistributedDataParallel, and rank 0 alone writes files.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from napari_connectome.errors import UserInputError
from napari_connectome.ffn.checkpoint import is_model_dir, load_model, save_model
from napari_connectome.ffn.config import ModelConfig
from napari_connectome.ffn.model import FFNArchitecture, build_model
from napari_connectome.ffn.options import InferenceOptions
from napari_connectome.ffn.precision import choose_precision
from napari_connectome.ffn.training.config import TrainConfig
from napari_connectome.ffn.training.examples import (
    ExampleSlot,
    TrainingData,
    cut_example,
    load_training_data,
)
from napari_connectome.progress import ProgressCallback, no_progress

CONFIG_NAME = "train_config.json"
METRICS_NAME = "metrics.csv"
METRIC_FIELDS = [
    "step",
    "split",
    "loss",
    "accuracy",
    "precision",
    "recall",
    "examples_per_s",
    "fov_steps_per_s",
    "elapsed_s",
]


def _dist_info() -> tuple[int, int]:
    """(rank, world size) from torchrun's environment, (0, 1) otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    return rank, world


def prepare_run_dir(out: Path, cfg: TrainConfig, resume: bool) -> TrainConfig | None:
    """Check the output folder before anything is written; returns the saved config on resume."""
    from napari_connectome.volumes.output_safety import refuse_overlap

    init = cfg.init_model if cfg.init_model and Path(cfg.init_model).expanduser().exists() else None
    refuse_overlap(out, [cfg.image, cfg.labels, init])  # the run folder is never in an input
    if out.is_symlink():
        raise UserInputError(
            f"{out} is a link: a training run is written to a folder, never through a link; "
            "choose another output folder"
        )
    saved = out / CONFIG_NAME
    if resume:
        if not saved.is_file():
            raise UserInputError(f"--resume: {out} holds no training run ({CONFIG_NAME} missing)")
        old = TrainConfig.load(saved)
        diff = old.first_difference(cfg)
        if diff:
            name, was, now = diff
            raise UserInputError(
                f"--resume: the run in {out} was started with {name}={was!r}, now {name}={now!r}; "
                "a resumed run must keep its config (only steps, logging, threads, device and "
                "precision may change). Start a new output folder to train differently"
            )
        return old
    if out.exists():
        if saved.is_file():
            raise UserInputError(
                f"{out} already holds a training run; pass --resume to continue it or choose "
                "another output folder"
            )
        if not out.is_dir() or any(out.iterdir()):
            raise UserInputError(f"{out} exists and is not an empty folder; choose another output")
    if not out.parent.is_dir():
        raise UserInputError(f"parent folder {out.parent} does not exist; create it first")
    return None


def model_config_for(cfg: TrainConfig, provenance: dict[str, Any]) -> ModelConfig:
    arch = FFNArchitecture(
        depth=cfg.depth, features=cfg.features, fov_size=cfg.fov_size, deltas=cfg.deltas
    )
    return ModelConfig(
        architecture=arch,
        image_mean=cfg.image_mean,
        image_stddev=cfg.image_stddev,
        inference=InferenceOptions(
            init_activation=cfg.init_activation,
            pad_value=cfg.pad_value,
            move_threshold=cfg.move_threshold,
        ),
        provenance=provenance,
    )


def _latest_checkpoint(out: Path) -> Path | None:
    ckpts = sorted((out / "checkpoints").glob("step-*"))
    ckpts = [c for c in ckpts if is_model_dir(c) and (c / "state.json").is_file()]
    return ckpts[-1] if ckpts else None


def _weighted_stats(logits, target, weight) -> dict[str, float]:
    """Loss and mask accuracy/precision/recall (prediction p > 0.5 vs target > 0.5)."""
    import torch

    with torch.no_grad():
        pred = logits > 0
        truth = target > 0.5
        w = weight > 0
        tp = float((pred & truth & w).sum())
        fp = float((pred & ~truth & w).sum())
        fn = float((~pred & truth & w).sum())
        n = float(w.sum())
        correct = float(((pred == truth) & w).sum())
    return {
        "accuracy": correct / n if n else float("nan"),
        "precision": tp / (tp + fp) if tp + fp else float("nan"),
        "recall": tp / (tp + fn) if tp + fn else float("nan"),
    }


def _loss(logits, target, weight):
    import torch.nn.functional as F

    per_voxel = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    return (per_voxel * weight).sum() / weight.sum().clamp_min(1.0)


class _Stream:
    """Endless lockstep batches from a coordinate sampler (one per process)."""

    def __init__(self, data: TrainingData, cfg: TrainConfig, sampler, rng, augment: bool):
        self.data, self.cfg, self.sampler, self.rng, self.augment = data, cfg, sampler, rng, augment
        self.slots = [self._new() for _ in range(cfg.batch_size)]
        self.examples = len(self.slots)

    def _new(self) -> ExampleSlot:
        centre = self.sampler.sample(self.rng)
        img, tgt, w = cut_example(self.data, centre, self.cfg, self.rng if self.augment else None)
        return ExampleSlot(img, tgt, w, self.cfg)

    def batch(self):
        for i, slot in enumerate(self.slots):
            if slot.done:
                self.slots[i] = self._new()
                self.examples += 1
        items = [s.next_fov() for s in self.slots]
        stack = lambda k: np.stack([it[k] for it in items])[:, None]  # noqa: E731
        return [it[0] for it in items], stack(1), stack(2), stack(3), stack(4)

    def update(self, positions, logits: np.ndarray) -> None:
        for slot, pos, lg in zip(self.slots, positions, logits[:, 0]):
            slot.update(pos, lg)


def validate(model, data: TrainingData, cfg: TrainConfig, device) -> dict[str, float]:
    """Loss and mask metrics over ``cfg.val_examples`` fixed validation examples (all moves)."""
    import torch

    if data.val is None:
        return {}
    rng = np.random.default_rng(cfg.seed + 12345)  # the same examples at every validation
    slots = []
    for _ in range(cfg.val_examples):
        img, tgt, w = cut_example(data, data.val.sample(rng), cfg, None)
        slots.append(ExampleSlot(img, tgt, w, cfg))
    total = {"loss": 0.0, "tp": 0.0, "fp": 0.0, "fn": 0.0, "correct": 0.0, "n": 0.0}
    model.eval()
    with torch.no_grad():
        while any(not s.done for s in slots):
            active = [s for s in slots if not s.done]
            for start in range(0, len(active), max(cfg.batch_size, 8)):
                chunk = active[start : start + max(cfg.batch_size, 8)]
                items = [s.next_fov() for s in chunk]
                image, seed, target, weight = (
                    torch.from_numpy(np.stack([it[k] for it in items])[:, None]).to(device)
                    for k in (1, 2, 3, 4)
                )
                logits = model(image, seed)
                wsum = float(weight.sum())
                total["loss"] += float(_loss(logits, target, weight)) * wsum
                pred, truth, w = logits > 0, target > 0.5, weight > 0
                total["tp"] += float((pred & truth & w).sum())
                total["fp"] += float((pred & ~truth & w).sum())
                total["fn"] += float((~pred & truth & w).sum())
                total["correct"] += float(((pred == truth) & w).sum())
                total["n"] += wsum
                out = logits.float().cpu().numpy()
                for s, it, lg in zip(chunk, items, out[:, 0]):
                    s.update(it[0], lg)
    model.train()
    n, tp, fp, fn = total["n"], total["tp"], total["fp"], total["fn"]
    return {
        "loss": total["loss"] / n if n else float("nan"),
        "accuracy": total["correct"] / n if n else float("nan"),
        "precision": tp / (tp + fp) if tp + fp else float("nan"),
        "recall": tp / (tp + fn) if tp + fn else float("nan"),
    }


def _write_metrics(path: Path, rows: list[dict[str, Any]]) -> None:
    new = not path.exists()
    with open(path, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=METRIC_FIELDS)
        if new:
            w.writeheader()
        for r in rows:
            w.writerow({k: r.get(k, "") for k in METRIC_FIELDS})


def _save_checkpoint(out: Path, step: int, model, optimizer, mcfg: ModelConfig, cfg: TrainConfig):
    import torch

    ckpt_dir = out / "checkpoints"
    ckpt_dir.mkdir(exist_ok=True)
    final = ckpt_dir / f"step-{step:08d}"
    tmp = ckpt_dir / f".step-{step:08d}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    mcfg = ModelConfig(
        architecture=mcfg.architecture,
        image_mean=mcfg.image_mean,
        image_stddev=mcfg.image_stddev,
        inference=mcfg.inference,
        provenance={**mcfg.provenance, "step": step},
    )
    save_model(tmp, model, mcfg)
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    (tmp / "state.json").write_text(json.dumps({"step": step}) + "\n")
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    save_model(out / "model", model, mcfg, overwrite=True)
    old = sorted(ckpt_dir.glob("step-*"))[: -cfg.keep_checkpoints]
    for o in old:
        shutil.rmtree(o, ignore_errors=True)


def train(
    cfg: TrainConfig,
    out: str | Path,
    *,
    resume: bool = False,
    image: Any | None = None,
    labels: Any | None = None,
    progress: ProgressCallback | None = None,
    log: Callable[[str], None] | None = None,
) -> Path:
    """Train (or continue training) an FFN; returns the exported model directory ``out/model``.

    ``image``/``labels`` may be arrays instead of the sources named in ``cfg`` (notebooks, tests).
    """
    import torch

    progress = progress or no_progress
    log = log or (lambda msg: None)
    out = Path(out)
    rank, world = _dist_info()
    if rank != 0:  # one progress bar and one log for the whole job
        progress, log = no_progress, (lambda msg: None)
    if cfg.world_size != world:
        cfg.world_size = world
    if cfg.device.startswith("cuda") and not torch.cuda.is_available():
        raise UserInputError("--device cuda was asked for but this machine has no CUDA GPU")
    prepare_run_dir(out, cfg, resume)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)

    init_cfg = None
    init_state = None
    if cfg.init_model and not resume:
        init_model, init_cfg = load_model(cfg.init_model)
        a = init_cfg.architecture
        mine = (cfg.depth, cfg.features, tuple(cfg.fov_size), tuple(cfg.deltas))
        theirs = (a.depth, a.features, a.fov_size, a.deltas)
        if mine != theirs:
            names = ("depth", "features", "fov_size", "deltas")
            i = next(k for k in range(4) if mine[k] != theirs[k])
            raise UserInputError(
                f"--init model {cfg.init_model} has {names[i]}={theirs[i]}, the training config "
                f"{names[i]}={mine[i]}; fine-tuning keeps the model's architecture (omit the "
                "architecture options or match them)"
            )
        init_state = init_model.state_dict()

    data = load_training_data(cfg, image=image, labels=labels)  # all input checks before writing
    created = not out.exists()
    try:
        if rank == 0:
            out.mkdir(exist_ok=True)
            if not resume:
                cfg.save(out / CONFIG_NAME)
        distributed = world > 1
        if distributed:
            import torch.distributed as dist

            if not dist.is_initialized():
                dist.init_process_group("nccl" if cfg.device.startswith("cuda") else "gloo")
            if dist.get_world_size() != world:
                raise UserInputError("torchrun's WORLD_SIZE disagrees with the process group size")
        device = torch.device(cfg.device)
        if device.type == "cuda" and distributed:
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(device)

        precision, why = choose_precision(cfg.precision, device)
        n = torch.get_num_threads()
        log(f"training on {device}: {why}; {n} CPU thread{'s' if n != 1 else ''}")
        torch.manual_seed(cfg.seed)
        model = build_model(
            FFNArchitecture(
                depth=cfg.depth, features=cfg.features, fov_size=cfg.fov_size, deltas=cfg.deltas
            )
        ).to(device)
        if init_state is not None:
            model.load_state_dict(init_state)
        if cfg.optimizer == "adam":
            optimizer = torch.optim.Adam(model.parameters(), lr=cfg.learning_rate)
        else:
            optimizer = torch.optim.SGD(
                model.parameters(), lr=cfg.learning_rate, momentum=cfg.momentum
            )
        step = 0
        if resume:
            ckpt = _latest_checkpoint(out)
            if ckpt is not None:
                from safetensors.torch import load_file

                model.load_state_dict(load_file(str(ckpt / "model.safetensors"), device="cpu"))
                optimizer.load_state_dict(
                    torch.load(ckpt / "optimizer.pt", map_location=device, weights_only=True)
                )
                step = int(json.loads((ckpt / "state.json").read_text())["step"])
                log(f"resumed from {ckpt.name}")
        provenance = {
            "source": "napari-connectome train",
            "image": str(cfg.image),
            "labels": str(cfg.labels),
            "roi": cfg.roi,
            "init_model": cfg.init_model,
            "init_model_provenance": init_cfg.provenance if init_cfg else None,
        }
        mcfg = model_config_for(cfg, provenance)
        net = model
        if distributed:
            from torch.nn.parallel import DistributedDataParallel

            net = DistributedDataParallel(
                model, device_ids=[device] if device.type == "cuda" else None
            )

        rng = np.random.default_rng([cfg.seed, rank, step])
        stream = _Stream(data, cfg, data.train, rng, augment=True)
        model.train()
        metrics_path = out / METRICS_NAME
        t0 = time.perf_counter()
        window = {"loss": 0.0, "n": 0, "accuracy": 0.0, "precision": 0.0, "recall": 0.0}
        window_t, window_ex, window_steps = time.perf_counter(), stream.examples, 0
        start_step = step
        while step < cfg.steps:
            positions, image_b, seed_b, target_b, weight_b = stream.batch()
            to = lambda a: torch.from_numpy(a).to(device, non_blocking=True)  # noqa: E731
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
                logits = net(to(image_b), to(seed_b))
            logits = logits.float()
            target, weight = to(target_b), to(weight_b)
            loss = _loss(logits, target, weight)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            stream.update(positions, logits.detach().float().cpu().numpy())
            stats = _weighted_stats(logits.detach(), target, weight)
            window["loss"] += float(loss.detach())
            window["n"] += 1
            window_steps += 1
            for k in ("accuracy", "precision", "recall"):
                if np.isfinite(stats[k]):
                    window[k] += stats[k]
            progress(step, cfg.steps, f"loss {float(loss.detach()):.4f}")
            rows = []
            if rank == 0 and (step % cfg.log_every == 0 or step == cfg.steps):
                dt = max(time.perf_counter() - window_t, 1e-9)
                rows.append(
                    {
                        "step": step,
                        "split": "train",
                        "loss": window["loss"] / window["n"],
                        "accuracy": window["accuracy"] / window["n"],
                        "precision": window["precision"] / window["n"],
                        "recall": window["recall"] / window["n"],
                        "examples_per_s": (stream.examples - window_ex) / dt,
                        "fov_steps_per_s": window_steps * cfg.batch_size / dt,
                        "elapsed_s": time.perf_counter() - t0,
                    }
                )
                window = {"loss": 0.0, "n": 0, "accuracy": 0.0, "precision": 0.0, "recall": 0.0}
                window_t, window_ex, window_steps = time.perf_counter(), stream.examples, 0
            if (
                rank == 0
                and data.val is not None
                and (step % cfg.val_every == 0 or step == cfg.steps)
            ):
                v = validate(model, data, cfg, device)
                rows.append(
                    {"step": step, "split": "val", **v, "elapsed_s": time.perf_counter() - t0}
                )
                log(
                    f"step {step}: val loss {v['loss']:.4f} precision {v['precision']:.3f} "
                    f"recall {v['recall']:.3f}"
                )
            if rows:
                _write_metrics(metrics_path, rows)
            if rank == 0 and (step % cfg.checkpoint_every == 0 or step == cfg.steps):
                _save_checkpoint(out, step, model, optimizer, mcfg, cfg)
                if any(r["split"] == "val" for r in rows) or step == cfg.steps:
                    _try_plot(out, log)
        if rank == 0 and step == start_step and not (out / "model").exists():
            _save_checkpoint(out, step, model, optimizer, mcfg, cfg)
        if distributed:
            import torch.distributed as dist

            dist.barrier()
            dist.destroy_process_group()
    except BaseException:
        if rank == 0 and not resume and _latest_checkpoint(out) is None:
            _discard_run(out, created)  # nothing to resume: let the same command run again
        raise
    return out / "model"


def _discard_run(out: Path, created: bool) -> None:
    """Remove what a failed new run wrote before its first checkpoint (a config without weights
    would make the next ``train`` into ``out`` refuse as if a run were there)."""
    if created:
        shutil.rmtree(out, ignore_errors=True)
        return
    for child in out.iterdir() if out.is_dir() else ():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)


def _try_plot(out: Path, log: Callable[[str], None]) -> None:
    from napari_connectome.ffn.training.report import plot_metrics

    try:
        plot_metrics(out / METRICS_NAME, out / "metrics.png")
    except ImportError:
        log("matplotlib is not installed; skipping metrics.png (pip install matplotlib)")
