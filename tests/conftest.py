"""Project-wide test set-up.

* Qt runs headless (``QT_QPA_PLATFORM=offscreen``) unless a display is available.
* A test that needs a service or data skips with a reason when it is missing; with
  ``NAPARI_CONNECTOME_REQUIRE_SERVICES=1`` (set by CI) every skip except those of ``gpu`` tests
  becomes a failure, so CI proves that Slurm, sshd, napari and the shared data really ran.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def pytest_collection_modifyitems(config, items):
    """Give Qt a display before any test runs: Qt's offscreen platform has no OpenGL on this kind
    of server and napari's canvas needs it, so when ``gui`` tests are selected start a private Xvfb
    (stopped by pid at exit) if installed; otherwise (or without gui tests) use offscreen."""
    if os.environ.get("DISPLAY"):
        return
    if any(item.get_closest_marker("gui") for item in items):
        from napari_connectome.gui._headless import ensure_display

        ensure_display()
    else:
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


REQUIRE_SERVICES = os.environ.get("NAPARI_CONNECTOME_REQUIRE_SERVICES", "") not in ("", "0")
ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("NAPARI_CONNECTOME_SHARED_DATA", ROOT.parent / "shared" / "data"))
FIB25_H5 = SHARED_DATA / "fib25-training-sample2" / "fib25_training_sample2.h5"
GOOGLE_FFN = SHARED_DATA / "google-ffn-fib25"

# Session fixtures starting Slurm and sshd on loopback (slurm_cluster, sshd_server, ...).
pytest_plugins = ["tests.services"]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if not (REQUIRE_SERVICES and report.skipped) or item.get_closest_marker("gpu"):
        return
    if hasattr(report, "wasxfail"):
        return
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    report.outcome = "failed"
    report.longrepr = (
        f"skipped, but NAPARI_CONNECTOME_REQUIRE_SERVICES=1 forbids skips: {reason}\n"
        "Install what the skip names (see .ci/run) or unset the variable on a machine without it."
    )


@pytest.fixture(scope="session")
def fib25_h5() -> Path:
    """The shared FIB-25 training_sample2 volume (raw, labels, fragments)."""
    if not FIB25_H5.is_file():
        pytest.skip(f"shared FIB-25 data not found at {FIB25_H5}")
    return FIB25_H5


@pytest.fixture(scope="session")
def google_ffn_dir() -> Path:
    """Google's published FIB-25 FFN checkpoint and its segmentation of training_sample2."""
    if not (GOOGLE_FFN / "model.ckpt-27465036.index").is_file():
        pytest.skip(f"Google's FFN checkpoint not found in {GOOGLE_FFN}")
    return GOOGLE_FFN
