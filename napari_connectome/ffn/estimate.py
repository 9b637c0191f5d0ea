"""How long an FFN run will take, said before it starts: expected FFN steps x measured step time.

Why: an FFN's cost is its number of steps (FOV predictions), not its voxels or seeds, and a
step's time differs ~100x between machines and precisions (docs/segmenting.md). So the step time
is measured here, a few real steps of the model on this device in the chosen precision, once per
(model, device, precision) in a process, and the number of steps follows a rule:

**Expected steps.** The FOV centre moves on a lattice of spacing ``deltas`` and only where the whole
FOV fits in the region, so a region of shape S offers ``prod(S - fov + 1) / prod(deltas)`` lattice
cells. Objects cover the region about once and neighbouring objects revisit the cells on their
borders, so the run takes :data:`STEPS_PER_CELL` steps per cell. That factor was measured on FIB-25:
Google's published run of training_sample2 (250^3, FOV 33, deltas 8) took 25,799 steps for 20,235
cells (1.27); the shipped ``fib25-small`` (FOV 17, deltas 4) on the 48^3 box at z, y, x = 100 of
the same volume took 438 steps for 512 cells (0.86). 1.3 errs on the long side. EM with larger or
smaller cells than FIB-25's neurites, or a model that stops early, moves it; the estimate is a
guide, and the running ETA uses the run's own step rate once it has one.

**Explicit seeds** grow only their own objects: then the expected steps are at most
:data:`STEPS_PER_SEED` per seed (Google's FIB-25 run: 25,799 steps for 254 objects, 102 each), and
never more than the region's; the estimate says "at most".
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

#: FFN steps per lattice cell (``prod(deltas)`` voxels where the FOV fits); see the module doc.
STEPS_PER_CELL = 1.3
#: FFN steps per explicit seed (an upper guide; see the module docstring).
STEPS_PER_SEED = 100

_STEP_SECONDS: dict[tuple[Any, str, str], float] = {}


def interior_voxels(shape: Sequence[int], fov_size: Sequence[int]) -> int:
    """Voxels of a region where the model's FOV fits entirely (where FFN steps can be)."""
    return int(np.prod([max(int(s) - int(f) + 1, 0) for s, f in zip(shape, fov_size)]))


def expected_steps(
    shape: Sequence[int], fov_size: Sequence[int], deltas: Sequence[int], free: float = 1.0
) -> int:
    """FFN steps a region of ``shape`` is expected to take (:data:`STEPS_PER_CELL` per cell);
    ``free``: the fraction of the region no object has claimed yet (for the steps still to go)."""
    cells = interior_voxels(shape, fov_size) * float(free) / float(np.prod(deltas))
    return math.ceil(STEPS_PER_CELL * cells)


def step_seconds(
    runner: Any, config: Any, *, key: Any = None, steps: int = 30, budget_s: float = 0.3
) -> float:
    """Seconds one FFN step of ``runner``'s model takes on its device and precision.

    Measured once per (``key`` or the model, device, precision) in this process: real steps
    (forward pass, face maxima, the host copy) on a random FOV after two warm-up steps, at least 3
    and then until ``budget_s`` or ``steps`` is reached; the median step counts. Why the median
    of many: in the viewer the measurement runs while the window draws itself, and 4 timed steps
    once gave an estimate 4x too long when a repaint fell inside them.
    """
    cache_key = (key if key is not None else id(runner.model), str(runner.device), runner.precision)
    if cache_key in _STEP_SECONDS:
        return _STEP_SECONDS[cache_key]
    from napari_connectome.ffn.canvas import Canvas, FovRequest
    from napari_connectome.ffn.options import options_for_model

    fov = tuple(int(v) for v in config.fov_size)
    rng = np.random.default_rng(0)
    canvas = Canvas(
        rng.integers(0, 256, fov).astype(np.uint8),
        fov_size=fov,
        deltas=tuple(int(v) for v in config.deltas),
        image_mean=float(config.image_mean),
        image_stddev=float(config.image_stddev),
        options=options_for_model(config),
        device=runner.device,
    )
    centre = tuple(int(v) for v in canvas.margin)
    canvas.init_seed(centre)
    request = FovRequest(canvas, centre, [centre])
    import torch

    times: list[float] = []
    with torch.inference_mode():
        for _ in range(2):  # warm-up: first-call allocations and kernel choice
            runner._step([request])
        start = time.perf_counter()
        while len(times) < 3 or (len(times) < steps and time.perf_counter() - start < budget_s):
            t0 = time.perf_counter()
            runner._step([request])
            times.append(time.perf_counter() - t0)
    for name in ("predict_calls", "forward_batches"):  # the measurement is not part of a run
        runner.counters[name] -= len(times) + 2
    seconds = float(np.median(times))
    _STEP_SECONDS[cache_key] = seconds
    return seconds


@dataclass(frozen=True)
class RunEstimate:
    """What a run will cost, shown before it starts."""

    shape: tuple[int, int, int]
    steps: int
    step_seconds: float
    device: str
    precision: str
    at_most: bool = False  # explicit seeds: an upper bound

    @property
    def voxels(self) -> int:
        return int(np.prod(self.shape))

    @property
    def seconds(self) -> float:
        return self.steps * self.step_seconds

    def describe(self) -> str:
        """E.g. '48 x 250 x 250 = 3,000,000 voxels: ~2,200 FFN steps, about 40 s (cpu, bf16)'."""
        dims = " x ".join(str(s) for s in self.shape)
        return (
            f"{dims} = {self.voxels:,} voxels: {'at most ' if self.at_most else '~'}"
            f"{self.steps:,} FFN steps, {format_duration(self.seconds)} "
            f"({self.device}, {self.precision}, "
            f"{_rate(1.0 / max(self.step_seconds, 1e-9))} steps/s measured)"
        )


def estimate_run(
    shape: Sequence[int], runner: Any, config: Any, *, key: Any = None, seeds: int | None = None
) -> RunEstimate:
    """The expected steps of a region of ``shape`` (or of ``seeds`` explicit seeds in it) times
    this machine's measured step time."""
    steps = expected_steps(shape, config.fov_size, config.deltas)
    if seeds is not None:
        steps = min(steps, STEPS_PER_SEED * int(seeds))
    return RunEstimate(
        shape=tuple(int(s) for s in shape),  # type: ignore[arg-type]
        steps=steps,
        step_seconds=step_seconds(runner, config, key=key),
        device=str(runner.device),
        precision=str(runner.precision),
        at_most=seeds is not None,
    )


def _rate(per_second: float) -> str:
    return f"{per_second:,.0f}" if per_second >= 10 else f"{per_second:.2g}"


def format_duration(seconds: float) -> str:
    """'about 40 s', 'about 4 min', 'about 2.5 h': as precise as an estimate is."""
    if seconds < 1:
        return "under a second"
    if seconds < 90:
        return f"about {seconds:.0f} s"
    if seconds < 90 * 60:
        return f"about {seconds / 60:.0f} min"
    return f"about {seconds / 3600:.1f} h"
