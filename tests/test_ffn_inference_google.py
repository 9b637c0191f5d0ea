"""Objects grown from Google's recorded seeds match Google's published FIB-25 segments (real data).

Google's segment k was grown while segments 1..k-1 already existed: its FOV never entered them and
it could not claim their voxels. We give grow_object the same context (Google's earlier segments as
the existing segmentation) and score IoU after removing from ours the voxels Google gave to other
ids.
"""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from napari_connectome.ffn.checkpoint import import_google_checkpoint, load_model
from napari_connectome.ffn.inference import grow_object
from napari_connectome.ffn.options import options_for_model

pytestmark = pytest.mark.realdata


@pytest.fixture(scope="session")
def google_model(google_ffn_dir, tmp_path_factory):
    model_dir = tmp_path_factory.mktemp("ffn") / "google-fib25"
    import_google_checkpoint(google_ffn_dir / "model.ckpt-27465036", model_dir)
    return load_model(model_dir)


def google_object_iou(sid, origins, raw, google, model, config) -> tuple[float, int]:
    """IoU of our object from Google's seed of ``sid`` with Google's segment ``sid``; our steps."""
    earlier = np.where((google > 0) & (google < sid), google, 0)
    *_, final = grow_object(
        raw, origins[str(sid)]["start_zyx"], model, config, options_for_model(config),
        segmentation=earlier, every=0, precision="fp32",  # Google's run was float32
    )  # fmt: skip
    ours = np.zeros(raw.shape, bool)
    z, y, x = final.offset
    dz, dy, dx = final.mask.shape
    ours[z : z + dz, y : y + dy, x : x + dx] = final.mask
    ours &= (google == 0) | (google == sid)
    theirs = google == sid
    return float((ours & theirs).sum() / (ours | theirs).sum()), final.outcome.steps


def test_objects_from_google_seeds_match_google_segments(fib25_h5, google_ffn_dir, google_model):
    model, config = google_model
    with h5py.File(fib25_h5, "r") as f:
        raw = f["raw"][:]
    google = np.load(google_ffn_dir / "sample-training2.npz", allow_pickle=False)["segmentation"]
    origins = json.loads((google_ffn_dir / "sample-training2.origins.json").read_text())
    # the three cheapest seeds in the 20..300 step range (deterministic, ~75 FFN steps in all)
    eligible = sorted((o["iters"], int(k)) for k, o in origins.items() if 20 <= o["iters"] <= 300)
    chosen = [sid for _, sid in eligible[:3]]
    scores = {}
    for sid in chosen:
        iou, steps = google_object_iou(sid, origins, raw, google, model, config)
        scores[sid] = (round(iou, 4), steps, origins[str(sid)]["iters"])
    print("segment id: (IoU, our steps, Google's steps)", scores)
    assert np.median([s[0] for s in scores.values()]) >= 0.95, scores
