"""ffn/estimate.py: expected FFN steps of a region and this machine's measured step time."""

from __future__ import annotations

import numpy as np
import pytest

from napari_connectome.ffn.estimate import (
    STEPS_PER_CELL,
    estimate_run,
    expected_steps,
    format_duration,
    interior_voxels,
    step_seconds,
)


def _flood(deltas: int = 4):
    import torch

    from napari_connectome.ffn.config import ModelConfig
    from napari_connectome.ffn.model import FFNArchitecture, build_model

    arch = FFNArchitecture(depth=1, features=4, fov_size=(9, 9, 9), deltas=(deltas,) * 3)
    model = build_model(arch)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.conv_lom.bias.fill_(8.0)  # every voxel of every FOV becomes "object"
    return model, ModelConfig(architecture=arch)


def test_the_rule_counts_lattice_cells_where_the_fov_fits():
    assert interior_voxels((48, 48, 48), (9, 9, 9)) == 40**3
    assert interior_voxels((8, 48, 48), (9, 9, 9)) == 0
    assert expected_steps((48, 48, 48), (9, 9, 9), (4, 4, 4)) == int(np.ceil(1.3 * 1000))
    # Google's published FIB-25 run: 25,799 steps for 250^3 with FOV 33, deltas 8
    google = expected_steps((250, 250, 250), (33, 33, 33), (8, 8, 8))
    assert 0.9 < google / 25_799 < 1.2
    assert expected_steps((48, 48, 48), (9, 9, 9), (4, 4, 4), free=0.5) == int(
        np.ceil(STEPS_PER_CELL * 500)
    )


@pytest.mark.slow
@pytest.mark.realdata
def test_the_shipped_model_on_fib25_takes_about_the_expected_steps(fib25_h5):
    """The rule's figure for fib25-small (0.86 steps per cell on this box; the rule says 1.3)."""
    from napari_connectome.ffn.checkpoint import load_model
    from napari_connectome.ffn.inference import segment_region
    from napari_connectome.ffn.zoo import default_model
    from napari_connectome.volumes import open_volume

    model, config = load_model(default_model())
    image = np.asarray(open_volume(f"{fib25_h5}:raw").data[100:148, 100:148, 100:148])
    result = segment_region(image, model, config)
    expected = expected_steps(image.shape, config.fov_size, config.deltas)
    assert 0.5 < result.counters["steps"] / expected < 2.0


def test_step_time_is_measured_once_per_model_device_and_precision():
    from napari_connectome.ffn.runner import LockstepRunner

    model, config = _flood()
    runner = LockstepRunner(model, precision="fp32")
    first = step_seconds(runner, config, key="flood-test")
    assert first > 0
    assert runner.counters["predict_calls"] == 0  # the measurement is not part of a run
    assert step_seconds(runner, config, key="flood-test") == first  # cached
    est = estimate_run((48, 48, 48), runner, config, key="flood-test")
    assert est.voxels == 48**3
    assert est.seconds == pytest.approx(est.steps * first)
    text = est.describe()
    assert text.startswith("48 x 48 x 48 = 110,592 voxels: ~1,300 FFN steps")
    assert "(cpu, fp32," in text
    # explicit seeds grow only their objects: at most STEPS_PER_SEED each
    seeded = estimate_run((48, 48, 48), runner, config, key="flood-test", seeds=2)
    assert seeded.steps == 200
    assert "voxels: at most 200 FFN steps" in seeded.describe()


def test_durations_read_like_estimates():
    assert format_duration(0.2) == "under a second"
    assert format_duration(40) == "about 40 s"
    assert format_duration(600) == "about 10 min"
    assert format_duration(9000) == "about 2.5 h"
