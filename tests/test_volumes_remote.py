"""Remote volumes (``ssh://``) read over SFTP on demand from the real loopback sshd, through the
chunk cache: what travels, what is cached, what a dropped connection does, and what is refused.

The "cluster" is this machine: an OME-Zarr written in a temporary folder is opened through sshd
as ``ssh://PROFILE/abs/path``, so every comparison is with a local read of the same file.
"""

from __future__ import annotations

import gc
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zarr

from napari_connectome.errors import UserInputError
from napari_connectome.jobs.profiles import make_profile, save_profile
from napari_connectome.volumes import create_ome_zarr, open_volume, write_ome_zarr
from napari_connectome.volumes.remote import (
    ChunkCache,
    RemoteUnavailableError,
    UntrustedKey,
    close_all,
    open_store,
    parse_ssh_url,
)

pytestmark = pytest.mark.ssh
SHAPE = (40, 96, 128)
CHUNK = 16


@pytest.fixture(autouse=True)
def user_dirs(tmp_path, monkeypatch):
    """Each test its own config dir (profiles, settings) and cache dir, and fresh logins."""
    monkeypatch.setenv("NAPARI_CONNECTOME_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("NAPARI_CONNECTOME_CACHE_DIR", str(tmp_path / "cache"))
    close_all()
    yield tmp_path
    close_all()
    gc.collect()  # stores of this test go (open_stores() lists live ones)


def blobs(shape=SHAPE) -> np.ndarray:
    """Label-like data: constant 8^3 cubes with distinct ids (compresses like a segmentation)."""
    z, y, x = np.indices(shape)
    return ((z // 8) * 10000 + (y // 8) * 100 + x // 8 + 1).astype(np.uint64)


@pytest.fixture(scope="module")
def pyramid(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cluster") / "seg.ome.zarr"
    write_ome_zarr(blobs(), path, labels=True, chunks=CHUNK, voxel_size_nm=(8, 8, 8), levels=3)
    return path


def save_loopback_profile(server, name="loop", **extra) -> str:
    fields = {
        "name": name,
        "host": server.host,
        "port": server.port,
        "user": server.user,
        "key": str(server.client_key),
        "known_hosts": str(server.known_hosts),
        **extra,
    }
    save_profile(make_profile(fields))
    return name


def chunk_files(array_path: Path, z: int) -> list[Path]:
    """Stored chunk files a plane at index ``z`` crosses (counted on disk, not by the store)."""
    arr = zarr.open_array(str(array_path), mode="r")
    cz = z // arr.chunks[0]
    return [p for p in (array_path / "c" / str(cz)).rglob("*") if p.is_file()]


def test_a_plane_reads_only_its_chunks_once_then_comes_from_the_cache(sshd_server, pyramid):
    save_loopback_profile(sshd_server)
    local = open_volume(pyramid)

    vol = open_volume(f"ssh://loop{pyramid}")
    store = _store_of(vol)

    assert vol.source == f"ssh://loop{pyramid}"
    assert vol.describe()["scales"] == local.describe()["scales"]
    assert vol.is_labels
    assert vol.format == "ome-zarr-0.5"
    assert store.counts["reads"] == 0  # opening reads metadata only

    plane = np.asarray(vol.data[21])
    np.testing.assert_array_equal(plane, np.asarray(local.data[21]))
    crossed = len(chunk_files(pyramid / "0", 21))
    assert crossed == (96 // CHUNK) * (128 // CHUNK)
    assert store.counts["reads"] == crossed

    coarse = np.asarray(vol.multiscale[1][5])
    np.testing.assert_array_equal(coarse, np.asarray(local.multiscale[1][5]))
    assert store.counts["reads"] == crossed + len(chunk_files(pyramid / "1", 5))

    # napari slices with dask's slice fusion off: a view still reads only the chunks it crosses
    import dask

    with dask.config.set({"optimization.fuse.active": False}):
        reads = store.counts["reads"]
        np.asarray(vol.data[35:36, 10:40, 10:40])
    assert store.counts["reads"] == reads + 3 * 3

    before = dict(store.counts)
    again = np.asarray(vol.data[21])
    np.testing.assert_array_equal(again, plane)
    assert store.counts["reads"] == before["reads"]  # no new remote read
    assert store.counts["stats"] == before.get("stats", 0)  # nor a remote check
    assert store.counts["hits"] == before.get("hits", 0) + crossed

    # another session (a fresh store over the same cache) checks each cached chunk with one
    # stat, and reads none again
    other = open_store(f"ssh://loop{pyramid}")
    vol2 = open_volume(f"ssh://loop{pyramid}", store=other)
    np.testing.assert_array_equal(np.asarray(vol2.data[21]), plane)
    assert other.counts["reads"] == 0
    assert other.counts["stats"] == crossed


def _store_of(volume):
    """The SFTP store ``open_volume`` made for a remote volume (the only one open for it)."""
    import gc

    from napari_connectome.volumes.remote import open_stores

    gc.collect()
    (store,) = [s for s in open_stores() if volume.source.startswith(s.location.label)]
    return store


def test_discover_opens_image_and_labels_of_a_remote_ome_zarr(sshd_server, tmp_path):
    """The reader's path: an OME-Zarr image with a labels group, both found over SFTP."""
    from napari_connectome.volumes import discover_volumes

    save_loopback_profile(sshd_server)
    from ome_zarr.format import FormatV05
    from ome_zarr.writer import write_image, write_labels

    em = tmp_path / "em.ome.zarr"
    root = zarr.open_group(str(em), mode="w", zarr_format=3)
    common = {"axes": "zyx", "fmt": FormatV05(), "scale_factors": [{"z": 2, "y": 2, "x": 2}]}
    write_image((blobs() % 251).astype(np.uint8), root, name="em", **common)
    write_labels(blobs(), root, name="seg", method="nearest", **common)

    vols = discover_volumes(f"ssh://loop{em}")

    assert [(v.name, v.is_labels) for v in vols] == [("em", False), ("seg", True)]
    assert vols[1].source == f"ssh://loop{em}/labels/seg"
    np.testing.assert_array_equal(np.asarray(vols[1].data[3, :20, :20]), blobs()[3, :20, :20])
    inner = open_volume(f"ssh://loop{em}/labels/seg", level=1)
    local = open_volume(f"{em}/labels/seg", level=1)
    assert inner.shape == local.shape != SHAPE
    np.testing.assert_array_equal(np.asarray(inner.data[7]), np.asarray(local.data[7]))


def test_the_cache_never_exceeds_its_limit(sshd_server, pyramid, user_dirs):
    from napari_connectome.settings import write_setting

    save_loopback_profile(sshd_server)
    write_setting("cache_gb", 40e3 / 1e9)  # 40 kB: ten 4 KiB chunk files
    store = open_store(f"ssh://loop{pyramid}")
    cache = store.cache
    assert cache.limit_bytes == 40_000
    vol = open_volume(f"ssh://loop{pyramid}", store=store)

    def on_disk() -> tuple[int, int]:
        files = [p for p in (user_dirs / "cache" / "chunks").rglob("*") if p.is_file()]
        files = [p for p in files if p.name != ".lock"]
        return sum(p.stat().st_size for p in files), sum(p.stat().st_blocks * 512 for p in files)

    for z in (0, 17, 33):
        np.testing.assert_array_equal(np.asarray(vol.data[z]), blobs()[z])
        apparent, allocated = on_disk()
        assert 0 < apparent <= allocated <= 40_000
        assert cache.total_bytes <= 40_000
    assert cache.evictions >= 3 * 48 - 10
    # an evicted chunk is read again, correctly
    reads = store.counts["reads"]
    np.testing.assert_array_equal(np.asarray(vol.data[0]), blobs()[0])
    assert store.counts["reads"] == reads + 48


def test_a_cache_left_by_an_earlier_session_is_trimmed_to_a_lower_limit(tmp_path):
    root = tmp_path / "chunks"
    cache = ChunkCache(root, 100_000)
    for i in range(20):
        assert cache.put(f"s/k{i}", bytes(3000), mtime=1.0e9 + i)
        time.sleep(0.002)
    assert cache.get("s/k0")[1] == 1.0e9  # the remote time is kept as the file's mtime
    cache.close()

    smaller = ChunkCache(root, 30_000)  # the user lowered cache_gb
    assert smaller.total_bytes <= 30_000
    left = sorted(p.name for p in (root / "s").iterdir())
    assert "k0" in left  # used last (by the get above), so kept
    assert "k1" not in left
    assert not smaller.put("s/huge", bytes(40_000), mtime=None)  # never fits: not cached


def test_a_second_process_reads_without_the_cache(tmp_path):
    """One owner at a time: the limit holds even with two viewers open."""
    cache = ChunkCache(tmp_path / "chunks", 10_000)
    code = (
        "import sys; from napari_connectome.volumes.remote.cache import ChunkCache; "
        "c = ChunkCache(sys.argv[1], 10_000); print(c.enabled, c.put('s/a', b'x', None))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "chunks")],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.split() == ["False", "False"]
    assert cache.enabled
    assert cache.put("s/a", b"x", None)


@pytest.mark.parametrize(
    "key",
    ["../secret", "0/../../x", "/etc/passwd", "0//c/0", "0/./c", "a\\b", "", "c/\x00"],
)
def test_a_key_that_leaves_the_store_is_refused(sshd_server, pyramid, key):
    save_loopback_profile(sshd_server)
    store = open_store(f"ssh://loop{pyramid}")
    from zarr.core.sync import sync

    with pytest.raises(UntrustedKey, match="relative path inside the store"):
        sync(store.get(key))
    with pytest.raises(UntrustedKey):
        store.invalidate([key])
    with pytest.raises(UntrustedKey):
        store.read_file(key)
    assert store.counts["reads"] == 0


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ssh://loop/../etc/x.zarr", "no '.', '..'"),
        ("ssh://loop/data/../../etc/seg.zarr", "no '.', '..'"),
        ("ssh://loop/~/seg.zarr", "no '.', '..' or '~'"),
        ("ssh://loop", "absolute path"),
        ("ssh:///data/seg.zarr", "name a saved cluster profile"),
        ("ssh://me@host:99999/data/seg.zarr", "port"),
        ("ssh://bad host/data/seg.zarr", "neither a saved cluster profile"),
        ("ssh://loop/data/em.h5", "only zarr and OME-Zarr"),
    ],
)
def test_a_bad_ssh_url_is_refused_before_connecting(url, message):
    save_profile(make_profile({"name": "loop", "host": "127.0.0.1", "port": 1}))
    with pytest.raises(UserInputError, match=message):
        open_volume(url)


def test_url_forms():
    save_profile(make_profile({"name": "polaris", "host": "polaris.alcf.anl.gov", "user": "me"}))
    loc = parse_ssh_url("ssh://polaris/eagle/p/seg.ome.zarr/labels/seg")
    assert (loc.profile, loc.ssh.host, loc.ssh.user, loc.ssh.port) == (
        "polaris",
        "polaris.alcf.anl.gov",
        "me",
        22,
    )
    assert (loc.root, loc.inner) == ("/eagle/p/seg.ome.zarr", "labels/seg")
    assert loc.source() == "ssh://polaris/eagle/p/seg.ome.zarr/labels/seg"
    direct = parse_ssh_url("ssh://you@login.example.org:2222/data/a%20b/v.zarr")
    assert (direct.profile, direct.ssh.user, direct.ssh.port) == (None, "you", 2222)
    assert direct.root == "/data/a b/v.zarr"
    assert direct.ssh.known_hosts is None  # ~/.ssh/known_hosts must verify it
    assert parse_ssh_url("ssh://polaris/scratch/plain").root == "/scratch/plain"
    # a different login or root has its own cache folder; the profile name is not part of it
    assert loc.cache_name() != direct.cache_name()
    assert (
        loc.cache_name()
        == parse_ssh_url("ssh://me@polaris.alcf.anl.gov:22/eagle/p/seg.ome.zarr").cache_name()
    )


def test_an_unknown_host_key_is_refused(sshd_server, pyramid, tmp_path, monkeypatch):
    other = tmp_path / "other_host_key"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)],
        check=True,
        capture_output=True,
    )
    wrong = tmp_path / "known_hosts"
    key = other.with_suffix(".pub").read_text().split()[:2]
    wrong.write_text(f"[{sshd_server.host}]:{sshd_server.port} {' '.join(key)}\n")
    save_loopback_profile(sshd_server, known_hosts=str(wrong))
    with pytest.raises(UserInputError, match=r"not trusted.*Refusing to connect"):
        open_volume(f"ssh://loop{pyramid}")

    # an address without a profile is verified against ~/.ssh/known_hosts: empty here
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "known_hosts").write_text("")
    monkeypatch.setenv("HOME", str(home))
    url = f"ssh://{sshd_server.user}@{sshd_server.host}:{sshd_server.port}{pyramid}"
    with pytest.raises(UserInputError, match="not trusted"):
        open_volume(url)

    # ... and opens once known_hosts holds the server's key (and the user's key is the default)
    (home / ".ssh" / "known_hosts").write_text(sshd_server.known_hosts.read_text())
    (home / ".ssh" / "id_ed25519").write_bytes(sshd_server.client_key.read_bytes())
    (home / ".ssh" / "id_ed25519").chmod(0o600)
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    vol = open_volume(url)
    np.testing.assert_array_equal(np.asarray(vol.data[2, :8, :8]), blobs()[2, :8, :8])


def test_a_killed_sshd_connection_is_reopened_by_the_next_read(sshd_server, pyramid):
    from napari_connectome.testing.network import serving_pid

    save_loopback_profile(sshd_server)
    vol = open_volume(f"ssh://loop{pyramid}")
    store = _store_of(vol)
    np.asarray(vol.data[0])
    session = store.session
    assert session.logins == 1

    pid = serving_pid(sshd_server.port, session.local_address[1])
    assert pid is not None
    assert pid != sshd_server.pid
    os.kill(pid, signal.SIGKILL)  # the login node's sshd for this login dies
    _wait_until(lambda: not _alive(pid))

    np.testing.assert_array_equal(np.asarray(vol.data[30]), blobs()[30])
    assert session.logins == 2
    assert store.counts["reads"] == 2 * 48


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _wait_until(cond, timeout=10.0):
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.05)


@pytest.fixture
def relay(sshd_server, tmp_path):
    """A network link to the sshd that a test can cut and restore (a profile named 'relay')."""
    from napari_connectome.testing.network import TcpRelay

    link = TcpRelay(sshd_server.host, sshd_server.port)
    known = tmp_path / "relay_known_hosts"
    key = sshd_server.host_key_pub.read_text().split()[:2]
    known.write_text(f"[{sshd_server.host}]:{link.port} {' '.join(key)}\n")
    save_loopback_profile(sshd_server, name="relay", port=link.port, known_hosts=str(known))
    yield link
    link.close()


def test_while_the_network_is_down_cached_chunks_read_and_others_fail_clearly(relay, pyramid):
    vol = open_volume(f"ssh://relay{pyramid}")
    store = _store_of(vol)
    store.session.retry_s = 0.3
    events = []
    store.session.listeners.append(lambda event, message: events.append((event, message)))
    cached = np.asarray(vol.data[4])

    relay.cut()
    np.testing.assert_array_equal(np.asarray(vol.data[4]), cached)  # from the cache
    with pytest.raises(RemoteUnavailableError, match=r"lost the connection to .*cached stays"):
        np.asarray(vol.data[36])
    t0 = time.monotonic()
    with pytest.raises(RemoteUnavailableError):  # within retry_s: refused at once, no login
        np.asarray(vol.data[37])
    assert time.monotonic() - t0 < 0.25
    assert [e for e, _ in events] == ["lost"]

    relay.restore()
    time.sleep(0.35)
    np.testing.assert_array_equal(np.asarray(vol.data[36]), blobs()[36])
    assert [e for e, _ in events] == ["lost", "restored"]
    assert store.session.logins == 2


def test_a_viewer_store_shows_fill_while_offline_and_remembers_what_it_missed(relay, pyramid):
    store = open_store(f"ssh://relay{pyramid}", on_unavailable="fill")
    vol = open_volume(f"ssh://relay{pyramid}", store=store)
    store.session.retry_s = 0.2
    relay.cut()

    assert not np.asarray(vol.data[12]).any()  # not cached: fill value, no exception
    assert len(store.missed) == 48
    relay.restore()
    time.sleep(0.25)
    assert store.session.reconnect()
    np.testing.assert_array_equal(np.asarray(vol.data[12]), blobs()[12])
    assert not store.missed


def test_a_running_jobs_output_fills_in_as_blocks_land(sshd_server, tmp_path):
    """Chunks the job has not written read as 0 and are asked for again: after the progress line
    names them (invalidate), after the absent interval, or after refresh()."""
    from napari_connectome.jobs.live import OutputFollower

    save_loopback_profile(sshd_server)
    out = tmp_path / "job.ome.zarr"
    create_ome_zarr(
        out, SHAPE, np.uint64, voxel_size_nm=(8, 8, 8), chunks=CHUNK, labels=True, levels=2
    )
    (out / "progress.jsonl").write_text('{"event": "start", "blocks_total": 3}\n')
    store = open_store(f"ssh://loop{out}", absent_ttl_s=60)
    follower = OutputFollower.for_store(store)
    assert follower.poll().blocks == 0
    vol = open_volume(f"ssh://loop{out}", store=store)
    assert not np.asarray(vol.data[5]).any()
    assert store.counts["absent"] == 48
    assert store.counts["reads"] == 0

    level0 = zarr.open_array(str(out / "0"), mode="r+")
    level0[0:16, 0:16, 0:16] = 7  # a worker writes block (0, 0, 0)
    assert not np.asarray(vol.data[5]).any()  # still within the absent interval: not asked again
    with open(out / "progress.jsonl", "a") as f:
        f.write(
            '{"event": "block", "phase": "segment", "block": [0, 0, 0], "chunk": "0/c/0/0/0"}\n'
        )
        f.write('{"event": "block", "phase": "segment", "block": [9], "chunk": "0/../../etc"}\n')
        f.write('{"event": "block", "phase": "seg')  # half a line: waits
    update = follower.poll()
    assert (update.blocks, update.chunks, update.refused) == (1, ["0/c/0/0/0"], 1)
    plane = np.asarray(vol.data[5])
    assert (plane[:16, :16] == 7).all()
    assert not plane[16:].any()
    assert store.counts["reads"] == 1

    level0[0:16, 0:16, 0:16] = 9  # the relabel phase rewrites the block
    with open(out / "progress.jsonl", "a") as f:
        f.write('ment", "block": [0, 0, 0], "chunk": "0/c/0/0/0"}\n')
    assert follower.poll().chunks == ["0/c/0/0/0"]
    assert (np.asarray(vol.data[5])[:16, :16] == 9).all()

    fast = open_store(f"ssh://loop{out}", absent_ttl_s=0.2)  # without a follower: the interval
    vol_fast = open_volume(f"ssh://loop{out}", store=fast)
    assert not np.asarray(vol_fast.data[5])[16:32].any()
    level0[0:16, 16:32, 0:16] = 3
    time.sleep(0.25)
    assert (np.asarray(vol_fast.data[5])[16:32, :16] == 3).all()

    level1 = zarr.open_array(str(out / "1"), mode="r+")
    assert not np.asarray(vol.multiscale[1][2]).any()
    level1[:] = 5  # the pyramid phase, then the job is done
    with open(out / "progress.jsonl", "a") as f:
        f.write('{"event": "done", "segments": 3}\n')
    update = follower.poll()
    assert update.done
    assert follower.done
    assert (np.asarray(vol.multiscale[1][2]) == 5).all()  # refreshed: absent chunks asked again


def test_a_chunk_rewritten_since_the_last_session_is_read_again(sshd_server, tmp_path):
    save_loopback_profile(sshd_server)
    out = tmp_path / "seg.ome.zarr"
    write_ome_zarr(blobs(), out, labels=True, chunks=CHUNK, levels=1)
    url = f"ssh://loop{out}"
    np.asarray(open_volume(url).data[0])

    arr = zarr.open_array(str(out / "0"), mode="r+")
    arr[0:16, 0:16, 0:16] = 42
    chunk = out / "0" / "c" / "0" / "0" / "0"
    later = chunk.stat().st_mtime + 5
    os.utime(chunk, (later, later))  # rewritten later than it was cached (as a relabel would be)

    fresh = open_store(url)
    plane = np.asarray(open_volume(url, store=fresh).data[0])
    assert (plane[:16, :16] == 42).all()
    np.testing.assert_array_equal(plane[16:], blobs()[0, 16:])
    assert fresh.counts["reads"] == 1
    assert fresh.counts["stats"] == 48


def test_a_remote_path_that_is_not_zarr_says_so(sshd_server, tmp_path):
    save_loopback_profile(sshd_server)
    (tmp_path / "empty.zarr").mkdir()
    with pytest.raises(UserInputError, match="no zarr metadata"):
        open_volume(f"ssh://loop{tmp_path}/empty.zarr")
    with pytest.raises(UserInputError, match="no zarr metadata"):
        open_volume(f"ssh://loop{tmp_path}/missing.zarr")


def test_settings_refuse_a_bad_cache_limit(user_dirs):
    from napari_connectome.settings import chunk_cache_limit_bytes, settings_path, write_setting

    assert chunk_cache_limit_bytes() == 10 * 10**9
    with pytest.raises(UserInputError, match="positive number of gigabytes"):
        write_setting("cache_gb", -1)
    settings_path().parent.mkdir(parents=True, exist_ok=True)
    settings_path().write_text("cache_gb: lots\n")
    with pytest.raises(UserInputError, match="positive number"):
        chunk_cache_limit_bytes()
    settings_path().write_text("cache_gib: 3\n")
    with pytest.raises(UserInputError, match=r"unknown setting.*cache_gib"):
        chunk_cache_limit_bytes()
    settings_path().write_text("cache_gb: 2.5\n")
    assert chunk_cache_limit_bytes() == 2_500_000_000


def test_a_profile_with_a_jump_host_reads_through_it(sshd_server, pyramid, tmp_path):
    from napari_connectome.testing.services import start_sshd

    with start_sshd() as target:
        # one key for both logins (as on a real cluster), both host keys in one known_hosts
        with open(target.root / "authorized_keys", "a") as f:
            f.write(sshd_server.client_key.with_suffix(".pub").read_text())
        known = tmp_path / "known_hosts"
        known.write_text(sshd_server.known_hosts.read_text() + target.known_hosts.read_text())
        jump = f"{sshd_server.user}@{sshd_server.host}:{sshd_server.port}"
        save_loopback_profile(
            target,
            name="behind",
            key=str(sshd_server.client_key),
            known_hosts=str(known),
            jump_host=jump,
        )
        vol = open_volume(f"ssh://behind{pyramid}")
        np.testing.assert_array_equal(np.asarray(vol.data[9]), blobs()[9])
        store = _store_of(vol)
        assert len(store.session._conns) == 2  # the bastion's login, then the tunnelled one
        close_all()


def test_metadata_naming_a_level_outside_the_store_is_refused(sshd_server, tmp_path):
    import json

    save_loopback_profile(sshd_server)
    (tmp_path / "secret").mkdir()
    write_ome_zarr(blobs((16, 16, 16)), tmp_path / "secret" / "x.zarr", chunks=16, levels=1)
    evil = tmp_path / "evil.ome.zarr"
    write_ome_zarr(blobs((16, 16, 16)), evil, chunks=16, levels=1)
    meta = json.loads((evil / "zarr.json").read_text())
    meta["attributes"]["ome"]["multiscales"][0]["datasets"][0]["path"] = "../secret/x.zarr/0"
    (evil / "zarr.json").write_text(json.dumps(meta))

    with pytest.raises(UserInputError, match=r"refusing key '\.\./secret|'\.\./secret"):
        np.asarray(open_volume(f"ssh://loop{evil}").data)


def test_a_remote_volume_is_read_by_dask_worker_processes(sshd_server, pyramid):
    """A store pickles as its location: each worker process logs in itself (the blockwise passes
    run on Dask)."""
    from dask.distributed import Client, LocalCluster

    save_loopback_profile(sshd_server)
    vol = open_volume(f"ssh://loop{pyramid}")
    with (
        LocalCluster(
            n_workers=1,
            threads_per_worker=2,
            processes=True,
            host="127.0.0.1",
            dashboard_address="127.0.0.1:0",
        ) as cluster,
        Client(cluster) as client,
    ):
        total = client.compute(vol.data[:, :40, :40].sum()).result()
    assert int(total) == int(blobs()[:, :40, :40].sum())
