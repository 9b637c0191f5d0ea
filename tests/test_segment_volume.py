"""``segment_volume`` from Python, the way a user's script calls it (the CLI's ``segment`` is the
same function behind argument parsing): same labels and report, progress and messages through
callbacks, bad input refused before anything is written."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_connectome.cli import main
from napari_connectome.errors import UserInputError
from napari_connectome.ffn.segment_volume import (
    COUNTERS_FILE,
    SegmentVolumeRequest,
    segment_volume,
)
from napari_connectome.volumes import open_volume
from napari_connectome.volumes.box import Box
from tests import test_segment_cli as segment_cli_tests

model_dir = segment_cli_tests.model_dir  # the same painter model and EM as the CLI's tests
em = segment_cli_tests.em


@pytest.fixture
def source(em):
    """The CLI tests' 40x40x96 'EM' volume (a bright cube and a bright rod), as the CLI names it."""
    return em[0]


def test_a_script_gets_the_cli_output_with_its_own_progress_and_messages(
    source, model_dir, tmp_path
):
    calls: list[tuple[int, int, str]] = []
    lines: list[str] = []
    request = SegmentVolumeRequest(
        source=source,
        dest=tmp_path / "script.ome.zarr",
        model=model_dir,
        roi=[(0, 40), (0, 40), (2, 96)],
        seeds=[(20, 20, 60), (15, 15, 15)],  # volume coordinates, as a user clicks them
        overrides={"min_segment_size": 50},
        threads=1,
    )
    result = segment_volume(
        request, progress=lambda d, t, m="": calls.append((d, t, m)), log=lines.append
    )

    assert result.dest == tmp_path / "script.ome.zarr"
    assert result.roi == Box((0, 0, 2), (40, 40, 96))
    assert result.counters["segments"] == 2
    seg = np.asarray(open_volume(result.dest).data)
    np.testing.assert_array_equal(seg[18:23, 18:23, 38:90], 1)  # the rod, from the first seed
    np.testing.assert_array_equal(seg[10:20, 10:20, 8:18], 2)
    np.testing.assert_array_equal(seg, result.segmentation.labels)
    assert tuple(open_volume(result.dest).offset_nm) == (0.0, 0.0, 16.0)
    # progress counts the two seeds; the messages are the ones the CLI prints
    assert calls[-1][:2] == (2, 2)
    assert "2 segments" in calls[-1][2]
    assert lines[0].startswith("FFN on cpu:")
    assert lines[0].endswith("1 CPU thread")
    assert lines[1].startswith("region ")
    assert lines[-1].startswith(f"wrote {result.dest}: 2 segments")
    report = json.loads((result.dest / COUNTERS_FILE).read_text())
    assert report == json.loads(json.dumps(result.report))
    assert report["objects"]["1"]["start_zyx"] == [20, 20, 60]

    # the command line with the same arguments writes the same labels and report
    cli_dest = tmp_path / "cli.ome.zarr"
    argv = ["segment", source, str(cli_dest), "--model", str(model_dir), "--roi", "0:40,0:40,2:96",
            "--seed", "20,20,60", "--seed", "15,15,15", "--min-segment-size", "50",
            "--threads", "1", "--quiet"]  # fmt: skip
    assert main(argv) == 0
    np.testing.assert_array_equal(np.asarray(open_volume(cli_dest).data), seg)
    cli_report = json.loads((cli_dest / COUNTERS_FILE).read_text())
    for key in ("source", "model", "roi_zyx", "options", "precision"):
        assert cli_report[key] == report[key], key

    def untimed(objects):
        return {k: {f: v for f, v in o.items() if f != "walltime_s"} for k, o in objects.items()}

    assert untimed(cli_report["objects"]) == untimed(report["objects"])


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"overrides": {"segment_treshold": 0.5}}, "unknown inference option(s) segment_treshold"),
        ({"seeds": [(15, 15, 15)], "roi": "0:40,0:40,30:96"}, "outside the --roi 0:40,0:40,30:96"),
        ({"seeds": [(15, 15)]}, "give a point as (z, y, x)"),
        ({"seeds": ["15,15"]}, "give a point as z,y,x"),
        ({"roi": [(0, 40), (0, 40), (0, 97)]}, "must lie within 0:96"),
    ],
)
def test_bad_requests_fail_before_anything_is_written(
    changes, message, source, model_dir, tmp_path
):
    before = sorted(p.name for p in tmp_path.iterdir())
    args = {"source": source, "dest": tmp_path / "out.ome.zarr", "model": model_dir, **changes}
    with pytest.raises(UserInputError) as err:
        segment_volume(SegmentVolumeRequest(**args), log=lambda _line: None)
    assert message in str(err.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == before
