"""Errors that mean what they say: a dropped connection is not a file error, a spec check reads a
model's config and not its weights, a failed download is not a full disk."""

from __future__ import annotations

import errno
import json
import shutil
import socket

import pytest

from napari_connectome.errors import UserInputError
from napari_connectome.ffn import zoo
from napari_connectome.jobs.segmenters import segmenter_min_shape
from napari_connectome.jobs.spec import SegmenterSpec, SSHSpec
from napari_connectome.jobs.transport import SSHTransport, transient_errors


def test_only_connection_errors_are_transient():
    import asyncssh

    dropped = [
        ConnectionResetError(errno.ECONNRESET, "reset"),
        OSError(errno.ECONNREFUSED, "refused"),  # Python makes it a ConnectionRefusedError
        BrokenPipeError(errno.EPIPE, "pipe"),
        TimeoutError("no answer"),
        asyncssh.ConnectionLost("gone"),
        asyncssh.SFTPConnectionLost("gone"),
    ]
    file_errors = [
        OSError(errno.ENOSPC, "No space left on device"),
        OSError(errno.EROFS, "Read-only file system"),
        PermissionError(errno.EACCES, "Permission denied"),
        FileNotFoundError(errno.ENOENT, "No such file"),
        asyncssh.SFTPNoSuchFile("missing"),
        asyncssh.SFTPPermissionDenied("denied"),
        asyncssh.SFTPFailure("the server's disk is full"),
    ]
    assert all(isinstance(e, transient_errors()) for e in dropped)
    assert not any(isinstance(e, transient_errors()) for e in file_errors)


@pytest.mark.ssh
def test_a_file_the_server_refuses_is_an_os_error_not_a_dropped_connection(sshd_server, tmp_path):
    spec = SSHSpec(
        host=sshd_server.host,
        port=sshd_server.port,
        user=sshd_server.user,
        key=str(sshd_server.client_key),
        known_hosts=str(sshd_server.known_hosts),
    )
    t = SSHTransport(spec)
    try:
        with pytest.raises(OSError) as err:
            t.write_file(str(tmp_path / "no-such-folder" / "f.txt"), b"x")
        assert err.value.errno == errno.ENOENT
        assert not isinstance(err.value, transient_errors())
        (tmp_path / "a-file").write_bytes(b"x")
        with pytest.raises(OSError) as err:
            t.makedirs(str(tmp_path / "a-file" / "sub"))
        assert not isinstance(err.value, transient_errors())
        t.write_file(str(tmp_path / "ok.txt"), b"still connected")  # the same login goes on
        assert (tmp_path / "ok.txt").read_bytes() == b"still connected"
    finally:
        t.close()


def test_the_fov_of_an_ffn_spec_comes_from_the_config_not_the_weights(tmp_path):
    """A model folder whose weights are unreadable still has its FOV read (the check runs on a
    login node); loading it for real is refused."""
    from napari_connectome.ffn.checkpoint import load_model

    shipped = zoo.default_model()
    model = tmp_path / "model"
    shutil.copytree(shipped, model)
    (model / "model.safetensors").write_bytes(b"not weights")
    fov = json.loads((model / "config.json").read_text())["architecture"]["fov_size"]
    assert segmenter_min_shape(SegmenterSpec(kind="ffn", model=str(model))) == tuple(fov)
    with pytest.raises(UserInputError, match="not a readable safetensors"):
        load_model(model)
    assert segmenter_min_shape(SegmenterSpec(kind="ffn")) == zoo.field_of_view(shipped)


def test_the_fov_of_a_zoo_model_needs_no_download(tmp_path, monkeypatch):
    monkeypatch.setenv(zoo.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setenv(zoo.ZOO_URL_ENV, "http://127.0.0.1:1/")  # nothing answers there
    spec = SegmenterSpec(kind="ffn", model="google-fib25")
    assert segmenter_min_shape(spec) == zoo.ZOO["google-fib25"].fov_size
    assert not (tmp_path / "cache").exists()
    with pytest.raises(UserInputError, match="neither a model directory"):
        segmenter_min_shape(SegmenterSpec(kind="ffn", model="no-such-model"))


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_refused_download_says_could_not_download(tmp_path, monkeypatch):
    monkeypatch.setenv(zoo.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setenv(zoo.ZOO_URL_ENV, f"http://127.0.0.1:{_closed_port()}/")
    with pytest.raises(UserInputError, match=r"could not download .*ConnectionError"):
        zoo.get_model("google-fib25")


def test_a_read_only_cache_is_not_a_download_failure(read_only_dir, monkeypatch, tmp_path):
    """The download never started: the cache folder cannot be written. That is the OSError the
    CLI explains with the folder's name (cli/_faults), not 'check the network'."""
    monkeypatch.setenv(zoo.CACHE_ENV, str(read_only_dir / "cache"))
    monkeypatch.setenv(zoo.ZOO_URL_ENV, (tmp_path / "mirror").as_uri())
    with pytest.raises(OSError) as err:
        zoo.get_model("google-fib25")
    assert err.value.errno in (errno.EROFS, errno.EACCES)
    assert not isinstance(err.value, UserInputError)
