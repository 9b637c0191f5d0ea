"""Open in neuroglancer: the loopback file server (only the chosen folders, byte ranges, CORS),
the viewer state (layer types, voxel size, segments, a project's merges as equivalences), the
neuroglancer package's viewer, and the CLI until Ctrl-C."""

from __future__ import annotations

import http.client
import io
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
import zlib
from urllib.parse import unquote, urlsplit

import numpy as np
import pytest

from napari_connectome.errors import UserInputError
from napari_connectome.viewers.file_server import FileServer
from napari_connectome.viewers.neuroglancer_link import PUBLIC_CLIENT, make_link
from napari_connectome.viewers.neuroglancer_state import equivalences_from_table
from napari_connectome.volumes import write_ome_zarr

BIG = 2**60 + 5  # ids above 2^53 must survive as exact decimal strings
VOXEL = (40.0, 8.0, 16.0)


@pytest.fixture(scope="module")
def volumes(tmp_path_factory):
    root = tmp_path_factory.mktemp("ng")
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (24, 40, 48), dtype=np.uint8)
    seg = np.zeros(img.shape, np.uint64)
    seg[2:12, 4:20, 4:30] = BIG
    seg[12:22, 20:36, 30:46] = 7
    seg[12:22, 4:20, 4:30] = 9
    write_ome_zarr(img, root / "em.ome.zarr", voxel_size_nm=VOXEL, chunks=16)
    write_ome_zarr(seg, root / "seg.ome.zarr", voxel_size_nm=VOXEL, labels=True, chunks=16)
    (root / "secret.txt").write_text("not for the browser")
    return root, img, seg


def _raw_get(server: FileServer, path: str, headers: dict | None = None):
    """A request with the path exactly as given (urllib would normalise '..')."""
    conn = http.client.HTTPConnection(server.host, server.port, timeout=10)
    conn.request("GET", path, headers=headers or {})
    resp = conn.getresponse()
    body = resp.read()
    conn.close()
    return resp, body


# ---- the file server ------------------------------------------------------------------------
def test_file_server_serves_only_the_chosen_folder(tmp_path):
    shared = tmp_path / "shared"
    (shared / "sub").mkdir(parents=True)
    (shared / "sub" / "a.bin").write_bytes(bytes(range(10)))
    (tmp_path / "outside.txt").write_text("secret")
    os.symlink(tmp_path / "outside.txt", shared / "link_out")
    os.symlink(shared / "sub" / "a.bin", shared / "link_in")
    os.symlink(tmp_path, shared / "dir_out")
    with FileServer() as server:
        assert server.host == "127.0.0.1"
        base = urlsplit(server.add_folder("data", shared)).path
        ok, body = _raw_get(server, base + "sub/a.bin")
        assert ok.status == 200
        assert body == bytes(range(10))
        assert ok.getheader("Access-Control-Allow-Origin") == "*"
        inside, body = _raw_get(server, base + "link_in")  # a link inside the folder: fine
        assert inside.status == 200
        assert body == bytes(range(10))
        t = server.token
        for path in (
            base + "../outside.txt",
            base + "sub/../../outside.txt",
            base + "%2e%2e/outside.txt",
            base + "sub/..%2f..%2foutside.txt",
            base + "link_out",  # a link that leads out
            base + "dir_out/outside.txt",
            base + "sub",  # a folder: no listings
            base,
            f"/{t}/other/sub/a.bin",  # a name never registered
            "/wrong-token/data/sub/a.bin",
            "/" + str(shared / "sub" / "a.bin"),
            base + "sub/a.bin%00",
        ):
            resp, body = _raw_get(server, path)
            assert resp.status == 404, path
            assert b"secret" not in body
        assert server.resolve(base + "sub/a.bin") == os.path.realpath(shared / "sub" / "a.bin")


def test_file_server_byte_ranges_and_preflight(tmp_path):
    (tmp_path / "f").write_bytes(bytes(range(100)))
    with FileServer() as server:
        base = urlsplit(server.add_folder("d", tmp_path)).path
        r, body = _raw_get(server, base + "f", {"Range": "bytes=10-19"})
        assert r.status == 206
        assert body == bytes(range(10, 20))
        assert r.getheader("Content-Range") == "bytes 10-19/100"
        r, body = _raw_get(server, base + "f", {"Range": "bytes=-5"})  # sharded zarr's index read
        assert r.status == 206
        assert body == bytes(range(95, 100))
        r, body = _raw_get(server, base + "f", {"Range": "bytes=90-"})
        assert r.status == 206
        assert body == bytes(range(90, 100))
        r, _ = _raw_get(server, base + "f", {"Range": "bytes=200-300"})
        assert r.status == 416
        assert r.getheader("Content-Range") == "bytes */100"
        conn = http.client.HTTPConnection(server.host, server.port, timeout=10)
        conn.request("OPTIONS", base + "f", headers={"Access-Control-Request-Headers": "range"})
        pre = conn.getresponse()
        pre.read()
        conn.close()
        assert pre.status == 204
        assert "range" in pre.getheader("Access-Control-Allow-Headers")
    with pytest.raises(UserInputError, match="not a folder"):
        FileServer().add_folder("x", tmp_path / "f")


# ---- the state ------------------------------------------------------------------------------
def test_link_has_the_right_layers_voxel_size_and_segments(volumes):
    root, _img, _seg = volumes
    link = make_link([str(root / "em.ome.zarr"), str(root / "seg.ome.zarr")], segments=[BIG, 7])
    try:
        state = link.state
        layers = {lay["name"]: lay for lay in state["layers"]}
        assert layers["em"]["type"] == "image"
        assert layers["seg"]["type"] == "segmentation"
        assert layers["seg"]["segments"] == [str(BIG), "7"]
        assert json.loads(json.dumps(state))["layers"][1]["segments"][0] == "1152921504606846981"
        # x, y, z in m, from the OME metadata's z, y, x nm
        assert state["dimensions"] == {"x": [16e-9, "m"], "y": [8e-9, "m"], "z": [40e-9, "m"]}
        assert state["position"] == [24.0, 20.0, 12.0]
        for name in ("em", "seg"):
            scheme, url = layers[name]["source"].split("://", 1)
            assert scheme == "zarr3"  # our OME-Zarr 0.5 is zarr v3
            assert url.startswith("http://127.0.0.1:")
            meta = json.loads(urllib.request.urlopen(url + "zarr.json", timeout=10).read())
            assert meta["attributes"]["ome"]["version"] == "0.5"
            chunk = urllib.request.urlopen(url + "0/c/0/0/0", timeout=10).read()
            assert chunk == (root / f"{name}.ome.zarr" / "0" / "c" / "0" / "0" / "0").read_bytes()
        # the folder above (and what lies beside the volumes) is not served
        above = layers["seg"]["source"].split("://", 1)[1].rsplit("/", 2)[0] + "/"
        for probe in (above + "secret.txt", above + "1-seg/../secret.txt"):
            with pytest.raises(urllib.error.HTTPError) as err:
                urllib.request.urlopen(probe, timeout=10)
            assert err.value.code == 404
    finally:
        link.stop()


def test_public_client_link_carries_the_state_in_the_url(volumes):
    root, _img, _seg = volumes
    with make_link([str(root / "seg.ome.zarr")], segments=[BIG], client="public") as link:
        assert link.url.startswith(PUBLIC_CLIENT + "#!")
        state = json.loads(unquote(link.url.split("#!", 1)[1]))
        assert state == json.loads(json.dumps(link.state))
        assert state["layers"][0]["type"] == "segmentation"


def test_formats_neuroglancer_cannot_read_need_the_package_or_are_refused(tmp_path):
    import h5py

    with h5py.File(tmp_path / "seg.h5", "w") as f:
        d = f.create_dataset("labels", data=np.arange(8 * 8 * 8, dtype=np.uint64).reshape(8, 8, 8))
        d.attrs["resolution"] = [30.0, 6.0, 6.0]
    link = make_link([f"{tmp_path / 'seg.h5'}:labels"], client="public")
    with pytest.raises(UserInputError, match="neuroglancer Python package"):
        link.start()
    link.stop()


def test_equivalences_from_a_table():
    frag = np.array([1, 2, 3, 4, 5, BIG], np.uint64)
    seg = np.array([1, 1, 3, 0, 3, 3], np.uint64)  # 4 deleted
    assert equivalences_from_table(frag, seg) == [[1, 2], [3, 5, BIG]]
    assert equivalences_from_table(frag, np.arange(1, 7, dtype=np.uint64)) == []
    from napari_connectome.errors import DataWarning

    with pytest.warns(DataWarning, match="selected segment"):
        assert equivalences_from_table(frag, seg, only_segments=[3], max_ids=3) == [[3, 5, BIG]]


# ---- the neuroglancer package's viewer --------------------------------------------------------
def test_package_viewer_and_a_project_s_merges(volumes, tmp_path):
    neuroglancer = pytest.importorskip("neuroglancer")
    from napari_connectome.proofread import ProofreadSession

    root, _img, _seg = volumes
    project = tmp_path / "proj"
    ProofreadSession.create(
        project, str(root / "seg.ome.zarr"), image=str(root / "em.ome.zarr")
    ).close()
    with ProofreadSession.open(project) as s:
        s.merge([9, BIG])
        merged = s.table.segment_of_fragment(BIG)
    with make_link([], project=project, segments=[merged]) as link:
        assert link.url.startswith("http://127.0.0.1:")
        assert "/v/" in link.url
        page = urllib.request.urlopen(link.url, timeout=20).read()
        assert b"<html" in page.lower() or b"<!doctype" in page.lower()  # the bundled client
        state = link.viewer.state
        seg = state.layers["seg"].layer
        assert isinstance(seg, neuroglancer.SegmentationLayer)
        assert isinstance(state.layers["em"].layer, neuroglancer.ImageLayer)
        groups = [sorted(int(x) for x in g) for g in seg.equivalences.sets()]
        assert groups == [[9, BIG]]
        assert [int(x) for x in seg.segments] == [9]  # the set's smallest member
        assert state.dimensions.scales.tolist() == pytest.approx([16e-9, 8e-9, 40e-9])


def test_package_viewer_serves_other_formats_from_our_reader(tmp_path):
    neuroglancer = pytest.importorskip("neuroglancer")
    import h5py

    ids = np.zeros((8, 12, 16), np.uint64)
    ids[2:6, 3:9, 4:12] = BIG
    with h5py.File(tmp_path / "seg.h5", "w") as f:
        f.create_dataset("labels", data=ids).attrs["resolution"] = [30.0, 6.0, 6.0]
    with make_link([f"{tmp_path / 'seg.h5'}:labels"], segments=[BIG]) as link:
        layer = link.viewer.state.layers["labels"].layer
        assert isinstance(layer, neuroglancer.SegmentationLayer)
        key = layer.source[0].url.removeprefix("python://volume/")
        server = link.url.split("/v/")[0]
        # what the client asks the package's server for: the info, then npz chunks
        info = json.loads(urllib.request.urlopen(f"{server}/neuroglancer/info/{key}").read())
        assert info["volumeType"] == "segmentation"
        assert info["dataType"] == "uint64"
        assert info["coordinateSpace"] == {"z": [3e-08, "m"], "y": [6e-09, "m"], "x": [6e-09, "m"]}
        raw = urllib.request.urlopen(f"{server}/neuroglancer/npz/{key}/1,1,1/0,0,0/8,12,16").read()
        np.testing.assert_array_equal(np.load(io.BytesIO(zlib.decompress(raw))), ids)


# ---- the command line -----------------------------------------------------------------------
PYTHON_FAULTHANDLER = (sys.executable, "-X", "faulthandler")


def _default_sigint() -> None:
    """Ctrl-C as a terminal gives it: a test run started in the background (``cmd &``,
    ``nohup``) ignores SIGINT, the child would inherit that, and Python then installs no
    KeyboardInterrupt handler (that, not the server, was why this test once hung)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start_cli(*args: str) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        # -X faulthandler: a SIGABRT (sent when it hangs) dumps every thread's stack to stderr
        [*PYTHON_FAULTHANDLER, "-m", "napari_connectome", "neuroglancer", *args, "--no-browser"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_default_sigint,
    )
    deadline = time.monotonic() + 120
    lines = []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if line.startswith("neuroglancer: "):
            return proc, "".join(lines)
    proc.kill()
    out, err = proc.communicate()
    raise AssertionError(f"no link printed: {''.join(lines)}{out}\n{err}")


def test_cli_serves_until_ctrl_c(volumes):
    root, _img, _seg = volumes
    proc, out = _start_cli(
        str(root / "em.ome.zarr"), str(root / "seg.ome.zarr"), "--segments", str(BIG)
    )
    try:
        assert "serving image layer 'em'" in out
        assert "serving segmentation layer 'seg'" in out
        url = out.rsplit("neuroglancer: ", 1)[1].strip()
        assert url.startswith("http://127.0.0.1:")
        urllib.request.urlopen(url, timeout=20).read()
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            _rest, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGABRT)  # faulthandler prints where each thread waits
            _rest, err = proc.communicate(timeout=30)
            raise AssertionError(f"still serving 30 s after Ctrl-C:\n{err[-6000:]}") from None
    assert proc.returncode == 0, err
    assert "stopped serving" in err
    assert "Traceback" not in err


def test_cli_bad_input_is_exit_2(tmp_path, volumes):
    root, _img, _seg = volumes
    for args, message in (
        ([str(tmp_path / "missing.zarr")], "does not exist"),
        ([], "nothing to show"),
        ([str(root / "seg.ome.zarr"), "--segments", "0"], "not a segment id"),
        ([str(root / "seg.ome.zarr"), "--segments", str(2**64)], "not a segment id"),
    ):
        proc = subprocess.run(
            [sys.executable, "-m", "napari_connectome", "neuroglancer", *args, "--no-browser"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 2, (args, proc.stderr)
        assert message in proc.stderr
        assert "Traceback" not in proc.stderr


@pytest.fixture(autouse=True)
def _no_browser(monkeypatch):
    monkeypatch.setenv("BROWSER", "true")  # never a real browser from a test


def test_exported_meshes_are_served_with_the_segmentation(volumes, tmp_path):
    from napari_connectome.meshing.volume_export import export_volume_meshes
    from napari_connectome.volumes import open_volume

    root, _img, _seg = volumes
    meshes = tmp_path / "meshes"
    export_volume_meshes(open_volume(root / "seg.ome.zarr"), meshes, segments=[BIG])
    with make_link([str(root / "seg.ome.zarr")], meshes=meshes, client="public") as link:
        (layer,) = link.state["layers"]
        volume_url, mesh_url = layer["source"]
        assert volume_url.startswith("zarr3://")
        assert mesh_url.startswith("precomputed://http://127.0.0.1:")
        base = mesh_url.removeprefix("precomputed://")
        for name in ("info", f"{BIG}:0", f"{BIG}:0:mesh"):
            served = urllib.request.urlopen(base + name, timeout=10).read()
            assert served == (meshes / name).read_bytes()
    with pytest.raises(UserInputError, match="not a neuroglancer precomputed mesh folder"):
        make_link([str(root / "seg.ome.zarr")], meshes=tmp_path, client="public")


def test_a_project_s_watershed_splits_are_named_as_not_shown(volumes, tmp_path):
    from napari_connectome.errors import DataWarning
    from napari_connectome.proofread import ProofreadSession

    root, _img, _seg = volumes
    project = tmp_path / "proj"
    ProofreadSession.create(
        project, str(root / "seg.ome.zarr"), image=str(root / "em.ome.zarr")
    ).close()
    with ProofreadSession.open(project) as s:
        plan = s.preview_split(9, [(16, 10, 6)], [(16, 10, 27)])  # both in fragment 9
        assert plan.method == "watershed"
        s.commit_split(plan)
    with (
        pytest.warns(DataWarning, match="watershed splits"),
        make_link([], project=project, client="public") as link,
    ):
        assert {lay["type"] for lay in link.state["layers"]} == {"image", "segmentation"}
