"""Training speed: the example sampler alone vs the training step, side by side in one run.

The sampler (partition-weighted centre, example cut, augmentation, FOV bookkeeping) must never be
the bottleneck: its batches/s should be far above the optimiser's steps/s. Prints one JSON line per
figure; the ratio is what to compare across machines.

    .venv/bin/python benchmarks/bench_train.py                       # shipped model's size, CPU
    .venv/bin/python benchmarks/bench_train.py --fov 33 --deltas 8 --depth 12 --features 32 \\
        --device cuda --batch 16                                      # Google's size on a GPU
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
from _data import H5  # noqa: E402  (../shared/data, or .gpu/data on the GPU machine)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--fov", type=int, default=17)
    ap.add_argument("--deltas", type=int, default=4)
    ap.add_argument("--depth", type=int, default=5)
    ap.add_argument("--features", type=int, default=16)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=20, help="timed training steps")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()

    import torch

    from napari_connectome.ffn.model import FFNArchitecture, build_model
    from napari_connectome.ffn.training.config import TrainConfig
    from napari_connectome.ffn.training.examples import load_training_data
    from napari_connectome.ffn.training.trainer import _loss, _Stream

    torch.set_num_threads(args.threads)
    cfg = TrainConfig(
        image=f"{H5}:raw",
        labels=f"{H5}:labels",
        roi=[0, 125, 0, 250, 0, 250],
        fov_size=[args.fov] * 3,
        deltas=[args.deltas] * 3,
        depth=args.depth,
        features=args.features,
        batch_size=args.batch,
    )
    t = time.perf_counter()
    data = load_training_data(cfg)
    setup_s = time.perf_counter() - t
    print(
        json.dumps(
            {
                "figure": "train_setup_s",
                "value": setup_s,
                "what": "read z<125 of FIB-25, partitions",
                "train_centres": len(data.train),
                "partitions": len(data.train.partitions),
            }
        )
    )

    rng = np.random.default_rng(0)
    stream = _Stream(data, cfg, data.train, rng, augment=True)
    device = torch.device(args.device)
    model = build_model(
        FFNArchitecture(
            depth=cfg.depth, features=cfg.features, fov_size=cfg.fov_size, deltas=cfg.deltas
        )
    ).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def step(batch):
        positions, img, seed, tgt, w = batch
        to = lambda a: torch.from_numpy(a).to(device)  # noqa: E731
        logits = model(to(img), to(seed))
        loss = _loss(logits, to(tgt), to(w))
        opt.zero_grad()
        loss.backward()
        opt.step()
        stream.update(positions, logits.detach().float().cpu().numpy())

    for _ in range(3):  # warm-up
        step(stream.batch())
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(args.steps):
        step(stream.batch())
    if device.type == "cuda":
        torch.cuda.synchronize()
    train_steps_s = args.steps / (time.perf_counter() - t)

    # the sampler alone: the same batches, with the FOV bookkeeping, no network
    n = args.steps * 10
    fake = np.zeros((args.batch, 1, *cfg.fov_size), np.float32)
    examples0 = stream.examples
    t = time.perf_counter()
    for _ in range(n):
        positions, *_ = stream.batch()
        stream.update(positions, fake)
    sampler_batches_s = n / (time.perf_counter() - t)
    examples_per_batch = (stream.examples - examples0) / n

    common = {
        "fov": args.fov,
        "depth": args.depth,
        "features": args.features,
        "batch": args.batch,
        "threads": args.threads,
        "device": args.device,
    }
    print(json.dumps({"figure": "train_steps_per_s", "value": train_steps_s, **common}))
    print(json.dumps({"figure": "train_fov_per_s", "value": train_steps_s * args.batch, **common}))
    print(
        json.dumps(
            {
                "figure": "sampler_batches_per_s",
                "value": sampler_batches_s,
                "new_examples_per_batch": examples_per_batch,
                **common,
            }
        )
    )
    print(
        json.dumps(
            {
                "figure": "sampler_over_train_ratio",
                "value": sampler_batches_s / train_steps_s,
                **common,
            }
        )
    )


if __name__ == "__main__":
    main()
