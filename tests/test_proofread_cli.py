"""The proofreading command line, run as a user would: import, info, export, bad input."""

from __future__ import annotations

import numpy as np
import zarr

from napari_connectome.cli import main
from napari_connectome.proofread import ProofreadSession


def test_import_edit_export_from_the_command_line(tmp_path, capsys):
    seg = np.zeros((8, 16, 16), np.uint32)
    seg[:, :, :8], seg[:, :, 8:] = 3, 9
    np.save(tmp_path / "seg.npy", seg)
    assert main(["proofread", "import", str(tmp_path / "seg.npy"), str(tmp_path / "proj")]) == 0
    with ProofreadSession.open(tmp_path / "proj") as s:  # fragments = segments, ids kept
        assert sorted(s.segment_ids().tolist()) == [3, 9]
        s.merge([9, 3])
    assert main(["proofread", "info", str(tmp_path / "proj")]) == 0
    assert "merge 3 into 9" in capsys.readouterr().out
    assert main(["proofread", "export", str(tmp_path / "proj"), str(tmp_path / "out.zarr")]) == 0
    assert (np.asarray(zarr.open_group(tmp_path / "out.zarr", mode="r")["0"]) == 9).all()


def test_bad_input_exits_2_with_a_message_and_writes_nothing(tmp_path, capsys):
    assert main(["proofread", "import", str(tmp_path / "missing.npy"), str(tmp_path / "p")]) == 2
    assert "does not exist" in capsys.readouterr().err
    np.save(tmp_path / "seg.npy", np.ones((4, 4, 4), np.uint8))
    main(["proofread", "import", str(tmp_path / "seg.npy"), str(tmp_path / "p")])
    assert main(["proofread", "import", str(tmp_path / "seg.npy"), str(tmp_path / "p")]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["proofread", "export", str(tmp_path / "p"), str(tmp_path / "p" / "x.zarr")]) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p", "seg.npy"]
