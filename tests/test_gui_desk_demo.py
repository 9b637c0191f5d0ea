"""``napari-connectome demo``: run as a user would, headless with --screenshot."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from napari_connectome.cli import main as cli

from .test_gui_desk import _flood_model

DEMO = [sys.executable, "-m", "napari_connectome", "demo"]


def _run(args, env=None, timeout=600):
    return subprocess.run(
        [*DEMO, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env or os.environ.copy(),
    )


def _looks_like_a_window(png) -> None:
    import imageio.v3 as iio

    pixels = iio.imread(png)
    assert pixels.shape[0] >= 600
    assert pixels.shape[1] >= 1000
    assert pixels[..., :3].std() > 20  # not a blank frame


@pytest.mark.gui
def test_demo_saves_a_screenshot_when_the_region_is_segmented(tmp_path):
    model = _flood_model(tmp_path / "flood", deltas=4)
    shot = tmp_path / "demo.png"

    result = _run(["--size", "48", "--model", str(model), "--screenshot", str(shot)])

    assert result.returncode == 0, result.stderr[-3000:]
    assert f"saved {shot}" in result.stdout
    _looks_like_a_window(shot)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo.png", "flood"]


@pytest.fixture
def zoo_mirror(google_ffn_dir, tmp_path_factory):
    """The default model from the shared copy of Google's checkpoint (offline)."""
    env = os.environ.copy()
    env["NAPARI_CONNECTOME_ZOO_URL"] = google_ffn_dir.as_uri()
    env["NAPARI_CONNECTOME_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    return env


@pytest.mark.gui
@pytest.mark.realdata
@pytest.mark.slow  # minutes on a busy 2-core CPU; the local-model run above is the CI twin
def test_demo_with_the_default_model_on_a_small_volume(tmp_path, zoo_mirror):
    shot = tmp_path / "demo.png"

    result = _run(["--size", "48", "--precision", "bf16", "--screenshot", str(shot)], zoo_mirror)

    assert result.returncode == 0, result.stderr[-3000:]
    _looks_like_a_window(shot)


@pytest.mark.gui
@pytest.mark.realdata
@pytest.mark.slow
def test_demo_full_size_with_the_default_model(tmp_path, zoo_mirror):
    shot = tmp_path / "demo.png"

    result = _run(["--screenshot", str(shot)], zoo_mirror, timeout=1800)

    assert result.returncode == 0, result.stderr[-3000:]
    _looks_like_a_window(shot)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--size", "20"], "field of view"),
        (["--size", "4000"], "too large"),
        (["--model", "no-such-model"], "neither a model folder"),
        (["--screenshot", "missing-dir/x.png"], "does not exist"),
        (["--screenshot", "shot.jpg"], ".png"),
    ],
)
def test_demo_refuses_bad_input_before_opening_anything(
    args, message, tmp_path, capsys, monkeypatch
):
    monkeypatch.chdir(tmp_path)

    assert cli(["demo", *args]) == 2

    assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_demo_never_overwrites_a_screenshot(tmp_path, capsys):
    shot = tmp_path / "keep.png"
    shot.write_bytes(b"precious")

    assert cli(["demo", "--screenshot", str(shot)]) == 2

    assert "already exists" in capsys.readouterr().err
    assert shot.read_bytes() == b"precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.png"]
