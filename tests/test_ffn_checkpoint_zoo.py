"""The model zoo, offline: the shared copy of Google's checkpoint stands in for GitHub."""

from __future__ import annotations

import json
import shutil

import pytest

from napari_connectome.cli import main
from napari_connectome.errors import UserInputError
from napari_connectome.ffn.checkpoint import load_model
from napari_connectome.ffn.zoo import ZOO, default_model, get_model, shipped_models


@pytest.fixture
def offline_zoo(monkeypatch, tmp_path, google_ffn_dir):
    """Zoo downloads come from file:// URLs of the shared copy; the cache is a fresh folder."""
    monkeypatch.setenv("NAPARI_CONNECTOME_ZOO_URL", google_ffn_dir.as_uri() + "/")
    monkeypatch.setenv("NAPARI_CONNECTOME_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_google_entry_points_at_the_pinned_commit():
    entry = ZOO["google-fib25"]
    assert "google/ffn/6f61f6e4/models/fib25/" in entry.base_url
    assert set(entry.files) == {
        "model.ckpt-27465036.index",
        "model.ckpt-27465036.data-00000-of-00001",
    }


@pytest.mark.realdata
def test_first_use_downloads_verifies_and_converts_once(offline_zoo):
    model_dir = get_model("google-fib25")

    assert model_dir == offline_zoo / "models" / "google-fib25"
    _model, cfg = load_model("google-fib25")  # names work wherever a model dir does
    assert cfg.fov_size == (33, 33, 33)
    assert cfg.deltas == (8, 8, 8)
    assert cfg.provenance["zoo_name"] == "google-fib25"
    assert cfg.provenance["license"].startswith("Apache-2.0")

    stamp = (model_dir / "model.safetensors").stat().st_mtime_ns
    assert get_model("google-fib25") == model_dir
    assert (model_dir / "model.safetensors").stat().st_mtime_ns == stamp  # not converted again


@pytest.mark.realdata
def test_a_corrupted_download_is_rejected(monkeypatch, tmp_path, google_ffn_dir):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    for name in ZOO["google-fib25"].files:
        shutil.copy(google_ffn_dir / name, mirror / name)
    data = mirror / "model.ckpt-27465036.data-00000-of-00001"
    raw = bytearray(data.read_bytes())
    raw[1000] ^= 0x01
    data.write_bytes(bytes(raw))
    monkeypatch.setenv("NAPARI_CONNECTOME_ZOO_URL", mirror.as_uri())
    monkeypatch.setenv("NAPARI_CONNECTOME_CACHE", str(tmp_path / "cache"))

    with pytest.raises(UserInputError, match="sha256"):
        get_model("google-fib25")
    assert not (tmp_path / "cache" / "models" / "google-fib25").exists()
    assert not (tmp_path / "cache" / "downloads" / "google-fib25" / data.name).exists()


def test_unreachable_mirror_says_what_to_do(monkeypatch, tmp_path):
    monkeypatch.setenv("NAPARI_CONNECTOME_ZOO_URL", (tmp_path / "empty").as_uri())
    monkeypatch.setenv("NAPARI_CONNECTOME_CACHE", str(tmp_path / "cache"))
    with pytest.raises(UserInputError, match=r"could not download .*NAPARI_CONNECTOME_ZOO_URL"):
        get_model("google-fib25")


def test_unknown_names_list_the_known_ones(tmp_path):
    with pytest.raises(UserInputError, match=r"known names: .*google-fib25"):
        get_model("no-such-model")


def test_models_command_lists_the_zoo(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("NAPARI_CONNECTOME_CACHE", str(tmp_path / "cache"))
    assert main(["models"]) == 0
    assert "google-fib25" in capsys.readouterr().out
    assert main(["models", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    google = next(r for r in rows if r["name"] == "google-fib25")
    assert google["source"] == "zoo"
    assert google["cached"] is False


@pytest.mark.realdata
def test_default_model_is_the_shipped_one_else_google(offline_zoo):
    shipped = shipped_models()
    expected = shipped[0] if shipped else offline_zoo / "models" / "google-fib25"
    assert default_model() == expected
    load_model(default_model())


def test_every_shipped_model_loads_and_names_its_origin():
    for model_dir in shipped_models():
        _model, cfg = load_model(model_dir)
        assert cfg.provenance.get("attribution"), f"{model_dir.name} lacks an attribution"
        assert cfg.provenance.get("license"), f"{model_dir.name} lacks a licence"
        readme = (model_dir.parents[1] / "README.md").read_text()
        assert model_dir.name in readme
