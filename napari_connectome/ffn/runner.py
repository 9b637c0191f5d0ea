"""Lockstep scheduler: many canvases, one batched forward pass per round.

google/ffn batches predict calls of concurrent canvases with threads (``ThreadingBatchExecutor``).
Here each canvas is a generator (:mod:`.canvas`) that yields its next FOV request; every round the
scheduler stacks up to ``batch`` requests, runs the model once (autocast, channels-last), applies
google's disconnected-seed freezing, writes the logits back into each canvas and computes the face
maxima on the device, then brings back one small tensor with everything the host needs to choose the
next moves. Image patches and logits never leave the device.
"""

from __future__ import annotations

import re
import time
from collections import Counter, deque
from collections.abc import Generator, Iterator
from contextlib import nullcontext
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_connectome.errors import UserInputError
from napari_connectome.ffn.canvas import FovRequest, FovResult, ProbeRequest
from napari_connectome.ffn.movement import face_maxima
from napari_connectome.ffn.precision import choose_precision
from napari_connectome.ffn.speculative import RequestBatch, resolve_batch

if TYPE_CHECKING:
    import torch

MAX_SELF_CONSISTENT_ITERS = 32


DEVICE_NAMES = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


def check_device_name(device: str | None) -> None:
    """Refuse a device that is no device name (for work that runs on other machines, whose
    GPUs this one cannot see)."""
    if device is not None and not DEVICE_NAMES.match(str(device)):
        raise UserInputError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N")


def resolve_device(device: str | None) -> torch.device:
    """``cpu``/``cuda``/``cuda:N``/None (= cuda if present); CUDA without CUDA is an error."""
    import torch

    if device in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    check_device_name(device)
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserInputError(
            f"--device {device} was requested but PyTorch sees no CUDA GPU on this machine "
            f"(torch {torch.__version__}); use --device cpu"
        )
    return dev


def worker_device(device: str | None) -> str:
    """``auto`` (or None) on a Dask worker or here: CPU without CUDA; else worker k of a node takes
    GPU k (mod the GPUs it sees), so ``workers: 4`` on a 4-GPU node uses every GPU once. Any other
    value is returned as given."""
    if device not in (None, "", "auto"):
        return str(device)
    import torch

    if not torch.cuda.is_available():
        return "cpu"
    index = 0
    try:
        from distributed import get_worker

        match = re.search(r"(\d+)$", str(get_worker().name))
        index = int(match.group(1)) if match else 0
    except (ImportError, ValueError):
        pass
    return f"cuda:{index % torch.cuda.device_count()}"


class LockstepRunner:
    """Runs a model for many canvas generators, batching their FOV requests."""

    def __init__(
        self,
        model: torch.nn.Module,
        *,
        device: str | torch.device | None = "cpu",
        precision: str = "auto",
        batch: int = 1,
        compile: bool = False,
        channels_last: bool = True,
    ):
        """``precision``: ``auto`` (per machine, see :mod:`.precision`), fp32, bf16 or fp16; what
        was chosen and why are ``self.precision`` and ``self.precision_reason``."""
        import torch

        if batch < 1:
            raise UserInputError(f"batch must be >= 1, got {batch}")
        self.device = resolve_device(device) if not isinstance(device, torch.device) else device
        self.precision_requested = precision or "auto"
        self.precision, self.precision_reason = choose_precision(precision, self.device)
        self.batch = int(batch)
        self.channels_last = channels_last
        model = model.to(self.device).eval()
        if channels_last:
            model = model.to(memory_format=torch.channels_last_3d)
        self.model = model
        self.forward = torch.compile(model, dynamic=False) if compile else model
        arch = getattr(model, "arch", None)
        self.deltas = tuple(arch.deltas) if arch is not None else None
        self.counters: Counter[str] = Counter()

    def _autocast(self):
        import torch

        if self.precision == "fp32":
            return nullcontext()
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        return torch.autocast(self.device.type, dtype=dtype)

    def predict(self, image: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """Raw batched forward: (B, D, H, W) image and logits -> (B, D, H, W) float32 logits."""
        import torch

        img, lg = image[:, None], logits[:, None]
        if self.channels_last:
            img = img.contiguous(memory_format=torch.channels_last_3d)
            lg = lg.contiguous(memory_format=torch.channels_last_3d)
        with self._autocast():
            out = self.forward(img, lg)
        return out[:, 0].float()

    # -- scheduling -----------------------------------------------------------------------------
    def run(self, drivers: list[Generator]) -> None:
        """Advance every generator until all are finished."""
        for _ in self.iterate(drivers):
            pass

    def iterate(self, drivers: list[Generator]) -> Iterator[int]:
        """Like :meth:`run`, yielding the number of FOV predictions after every round."""
        import torch

        with torch.inference_mode():
            pending: deque[tuple[Generator, Any]] = deque()
            for d in drivers:
                self._advance(d, None, pending)
            while pending:
                probes = [(d, r) for d, r in pending if isinstance(r, ProbeRequest)]
                groups = [(d, r) for d, r in pending if isinstance(r, RequestBatch)]
                if probes or groups:
                    special = (ProbeRequest, RequestBatch)
                    pending = deque((d, r) for d, r in pending if not isinstance(r, special))
                    if probes:
                        values = self._read_probes([r for _, r in probes])
                        for (d, _), v in zip(probes, values):
                            self._advance(d, v, pending)
                    for d, r in groups:  # several objects of one region (speculative.py)
                        self._advance(d, resolve_batch(self, r.items), pending)
                    if groups:
                        yield int(self.counters["predict_calls"])
                    continue
                take = [pending.popleft() for _ in range(min(self.batch, len(pending)))]
                t0 = time.perf_counter()
                results = self._step([r for _, r in take])
                self.counters["round_seconds"] += time.perf_counter() - t0
                for (d, _req), res in zip(take, results):
                    if isinstance(res, FovRequest):  # consistency iteration: ask again
                        pending.append((d, res))
                    else:
                        self._advance(d, res, pending)
                yield int(self.counters["predict_calls"])

    @staticmethod
    def _advance(driver: Generator, value: Any, pending: deque) -> None:
        try:
            req = driver.send(value)
        except StopIteration:
            return
        pending.append((driver, req))

    def _gather(self, reqs: list[FovRequest | ProbeRequest]) -> list[torch.Tensor]:
        """Canvas values at every request's probes; all indices travel in one host->device copy."""
        import torch

        idx = [r.canvas.flat_index(r.probes) for r in reqs]
        dev = torch.from_numpy(np.concatenate(idx)).to(self.device, non_blocking=True)
        parts, i = [], 0
        for r, ix in zip(reqs, idx):
            parts.append(r.canvas._seed_flat[dev[i : i + len(ix)]])
            i += len(ix)
        return parts

    def _read_probes(self, reqs: list[ProbeRequest]) -> list[np.ndarray]:
        import torch

        flat = torch.cat(self._gather(reqs)).cpu().numpy()
        self.counters["probe_syncs"] += 1
        out, i = [], 0
        for r in reqs:
            out.append(flat[i : i + len(r.probes)])
            i += len(r.probes)
        return out

    def _step(self, reqs: list[FovRequest]) -> list[FovResult | FovRequest]:
        import torch

        sls = [r.canvas.fov_slices(r.pos) for r in reqs]
        image = torch.stack([r.canvas.image[s] for r, s in zip(reqs, sls)])
        old = torch.stack([r.canvas.seed[s] for r, s in zip(reqs, sls)])
        fed = old
        if any(r.feed is not None for r in reqs):
            fed = torch.stack([old[i] if r.feed is None else r.feed for i, r in enumerate(reqs)])
        # per-request settings (canvases may differ): one small host->device copy per round
        settings = torch.tensor(
            [
                [
                    float(r.canvas.th.pad_value),
                    float(r.canvas.th.move_threshold),
                    float(r.canvas.options.disco_seed_threshold),
                ]
                for r in reqs
            ],
            dtype=torch.float32,
        ).to(self.device, non_blocking=True)
        pads, mt, disco = settings[:, 0], settings[:, 1], settings[:, 2]
        fed_in = torch.where(torch.isnan(fed), pads.view(-1, 1, 1, 1), fed)
        logits = self.predict(image, fed_in)
        self.counters["predict_calls"] += len(reqs)
        self.counters["forward_batches"] += 1

        results: list[Any] = [None] * len(reqs)
        repeat = self._consistency(reqs, fed_in, logits, results)

        mt4 = mt.view(-1, 1, 1, 1)
        active = ((logits >= mt4).float().mean(dim=(1, 2, 3)) > disco) & (disco >= 0)
        # google: "bias towards oversegmentation by making it impossible to reverse
        # disconnectedness predictions" -- NaN (never predicted) compares False, so stays free.
        freeze = active.view(-1, 1, 1, 1) & (old < 0.0) & (logits > old)
        logits = torch.where(freeze, old, logits)
        for i, (r, s) in enumerate(zip(reqs, sls)):
            if i not in repeat:
                r.canvas.seed[s] = logits[i]
        scores, offsets = face_maxima(logits, self.deltas or reqs[0].canvas.deltas)
        probe_parts = self._gather(reqs)
        n_f = scores.shape[1]
        host = (
            torch.cat([scores.reshape(-1), offsets.reshape(-1).float(), *probe_parts]).cpu().numpy()
        )
        sc = host[: len(reqs) * n_f].reshape(len(reqs), n_f)
        off = (
            host[len(reqs) * n_f : len(reqs) * n_f * 4].reshape(len(reqs), n_f, 3).astype(np.int64)
        )
        i0 = len(reqs) * n_f * 4
        for i, r in enumerate(reqs):
            if i in repeat:
                i0 += len(r.probes)
                continue
            results[i] = FovResult(sc[i], off[i], host[i0 : i0 + len(r.probes)])
            i0 += len(r.probes)
        return results

    def _consistency(self, reqs, fed_in, logits, results) -> set[int]:
        """google's self-consistency loop: re-predict at the same place until the output settles."""
        import torch

        idx = [i for i, r in enumerate(reqs) if r.canvas.options.consistency_threshold > 0]
        if not idx:
            return set()
        sel = torch.tensor(idx, device=self.device)
        diff = (torch.sigmoid(fed_in[sel]) - torch.sigmoid(logits[sel])).abs().mean(dim=(1, 2, 3))
        diff = diff.cpu().numpy()
        repeat = set()
        for j, i in enumerate(idx):
            r = reqs[i]
            if diff[j] >= r.canvas.options.consistency_threshold and (
                r.repeats + 1 < MAX_SELF_CONSISTENT_ITERS
            ):
                repeat.add(i)
                results[i] = FovRequest(r.canvas, r.pos, r.probes, logits[i].clone(), r.repeats + 1)
        return repeat
