"""Saving, loading and importing FFN models the way a user does it (Python API and CLI)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from napari_connectome.cli import main
from napari_connectome.errors import UserInputError
from napari_connectome.ffn.checkpoint import (
    import_google_checkpoint,
    load_model,
    save_model,
    tf_to_state_dict,
)
from napari_connectome.ffn.config import ModelConfig
from napari_connectome.ffn.model import FFNArchitecture, build_model

PREFIX = "model.ckpt-27465036"


def _small_config(depth: int = 2, features: int = 4) -> ModelConfig:
    return ModelConfig(
        architecture=FFNArchitecture(depth=depth, features=features, fov_size=9, deltas=2),
        image_mean=100.0,
        image_stddev=20.0,
        provenance={"made_by": "test"},
    )


def _run(image: np.ndarray, seed: np.ndarray, model) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(image), torch.from_numpy(seed)).numpy()


def test_save_then_load_gives_the_same_predictions(tmp_path):
    torch.manual_seed(0)
    cfg = _small_config()
    model = build_model(cfg.architecture)
    save_model(tmp_path / "my-model", model, cfg)

    loaded, loaded_cfg = load_model(tmp_path / "my-model")

    assert not loaded.training
    assert loaded_cfg == cfg
    assert loaded_cfg.provenance == {"made_by": "test"}
    rng = np.random.default_rng(1)
    image = rng.normal(size=(2, 1, 9, 9, 9)).astype(np.float32)
    seed = rng.normal(size=(2, 1, 9, 9, 9)).astype(np.float32)
    np.testing.assert_array_equal(_run(image, seed, model.eval()), _run(image, seed, loaded))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["my-model"]  # no temp leftovers


def test_save_refuses_to_overwrite_unless_asked(tmp_path):
    cfg = _small_config()
    save_model(tmp_path / "m", build_model(cfg.architecture), cfg)
    before = (tmp_path / "m" / "model.safetensors").read_bytes()

    with pytest.raises(UserInputError, match="already exists"):
        save_model(tmp_path / "m", build_model(cfg.architecture), cfg)
    assert (tmp_path / "m" / "model.safetensors").read_bytes() == before

    save_model(tmp_path / "m", build_model(cfg.architecture), cfg, overwrite=True)
    assert (tmp_path / "m" / "model.safetensors").read_bytes() != before


def test_overwrite_never_deletes_a_folder_that_is_not_a_model(tmp_path):
    user_dir = tmp_path / "thesis"
    user_dir.mkdir()
    (user_dir / "chapter1.tex").write_text("precious")
    cfg = _small_config()
    with pytest.raises(UserInputError, match="not a napari-connectome model"):
        save_model(user_dir, build_model(cfg.architecture), cfg, overwrite=True)
    assert (user_dir / "chapter1.tex").read_text() == "precious"


def test_a_config_that_does_not_match_the_weights_names_the_tensor(tmp_path):
    cfg = _small_config(depth=2, features=4)
    save_model(tmp_path / "m", build_model(cfg.architecture), cfg)
    config_path = tmp_path / "m" / "config.json"
    data = json.loads(config_path.read_text())

    data["architecture"]["features"] = 8
    config_path.write_text(json.dumps(data))
    with pytest.raises(UserInputError, match=r"'conv0_a.weight' has shape \(4, 2, 3, 3, 3\)"):
        load_model(tmp_path / "m")

    data["architecture"]["features"] = 4
    data["architecture"]["depth"] = 3
    config_path.write_text(json.dumps(data))
    with pytest.raises(UserInputError, match=r"lacks tensor 'conv2_a.weight'"):
        load_model(tmp_path / "m")

    data["architecture"]["depth"] = 1
    config_path.write_text(json.dumps(data))
    with pytest.raises(
        UserInputError, match=r"has tensor 'conv1_a\.(bias|weight)' .* does not have"
    ):
        load_model(tmp_path / "m")


def test_loading_something_that_is_not_a_model(tmp_path):
    with pytest.raises(UserInputError, match="not found"):
        load_model(tmp_path / "nowhere")
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "model.safetensors").write_bytes(b"garbage" * 10)
    (tmp_path / "m" / "config.json").write_text(json.dumps(_small_config().to_dict()))
    with pytest.raises(UserInputError, match="not a readable safetensors file"):
        load_model(tmp_path / "m")
    (tmp_path / "m" / "config.json").write_text('{"depth": 12}')
    with pytest.raises(UserInputError, match="not a napari-connectome FFN config"):
        load_model(tmp_path / "m")


def _numpy_convstack(variables: dict[str, np.ndarray], image, seed, depth: int) -> np.ndarray:
    """google/ffn's ConvStack3DFFNModel math in plain numpy, NDHWC with TF kernel layout."""

    def conv(x, name):
        w, b = variables[f"seed_update/{name}/weights"], variables[f"seed_update/{name}/biases"]
        k = w.shape[0]
        p = k // 2
        xp = np.pad(x, ((0, 0), (p, p), (p, p), (p, p), (0, 0)))
        out = np.zeros((*x.shape[:4], w.shape[-1]), np.float64)
        d, h, wd = x.shape[1:4]
        for dz in range(k):
            for dy in range(k):
                for dx in range(k):
                    patch = xp[:, dz : dz + d, dy : dy + h, dx : dx + wd]
                    out += np.einsum("nzyxi,io->nzyxo", patch, w[dz, dy, dx])
        return out + b

    relu = lambda a: np.maximum(a, 0)  # noqa: E731
    net = np.concatenate([image, seed], axis=-1)
    net = conv(relu(conv(net, "conv0_a")), "conv0_b")
    for i in range(1, depth):
        skip = net
        net = conv(relu(conv(relu(net), f"conv{i}_a")), f"conv{i}_b") + skip
    return seed + conv(relu(net), "conv_lom")


def test_tf_kernel_layout_maps_onto_torch_exactly():
    """Random TF-layout variables through our mapping give the same output as a numpy reference."""
    rng = np.random.default_rng(0)
    depth, f = 2, 3
    variables = {}
    for name, cin in [("conv0_a", 2), ("conv0_b", f), ("conv1_a", f), ("conv1_b", f)]:
        variables[f"seed_update/{name}/weights"] = rng.normal(0, 0.3, (3, 3, 3, cin, f))
        variables[f"seed_update/{name}/biases"] = rng.normal(0, 0.1, f)
    variables["seed_update/conv_lom/weights"] = rng.normal(0, 0.3, (1, 1, 1, f, 1))
    variables["seed_update/conv_lom/biases"] = rng.normal(0, 0.1, 1)
    variables["seed_update/conv0_a/weights/Adam"] = np.zeros((3, 3, 3, 2, f))  # ignored slot
    variables = {k: v.astype(np.float32) for k, v in variables.items()}
    # anisotropic sizes catch a swapped axis
    image = rng.normal(size=(1, 5, 6, 7, 1)).astype(np.float32)
    seed = rng.normal(size=(1, 5, 6, 7, 1)).astype(np.float32)

    model = build_model(FFNArchitecture(depth=depth, features=f, fov_size=(5, 7, 7), deltas=1))
    model.load_state_dict(tf_to_state_dict(variables), strict=True)
    to_torch = lambda a: np.ascontiguousarray(np.moveaxis(a, -1, 1))  # noqa: E731
    ours = _run(to_torch(image), to_torch(seed), model.eval())[:, 0]
    reference = _numpy_convstack(variables, image, seed, depth)[..., 0]
    np.testing.assert_allclose(ours, reference, atol=1e-4)


@pytest.mark.realdata
def test_import_googles_checkpoint_from_the_command_line(google_ffn_dir, tmp_path, capsys):
    out = tmp_path / "google-fib25"
    assert main(["import-checkpoint", str(google_ffn_dir / PREFIX), str(out)]) == 0
    assert "depth 12, 32 features" in capsys.readouterr().out

    model, cfg = load_model(out)
    assert cfg.architecture.depth == 12
    assert cfg.architecture.features == 32
    assert cfg.fov_size == (33, 33, 33)
    assert cfg.deltas == (8, 8, 8)
    assert (cfg.image_mean, cfg.image_stddev) == (128.0, 33.0)
    inf = cfg.inference
    assert (inf.init_activation, inf.pad_value, inf.move_threshold) == (0.95, 0.05, 0.9)
    assert (inf.segment_threshold, inf.min_segment_size) == (0.6, 1000)
    assert cfg.provenance["global_step"] == 27465036

    # Google's initial canvas (seed voxel 0.95, elsewhere 0.05) on an EM-like image: the network
    # must grow the object around the seed, i.e. raise the centre and keep values finite.
    rng = np.random.default_rng(0)
    image = ((rng.integers(0, 256, (1, 1, 33, 33, 33)) - 128) / 33).astype(np.float32)
    p = np.full((1, 1, 33, 33, 33), 0.05, np.float32)
    p[0, 0, 16, 16, 16] = 0.95
    logits = _run(image, np.log(p / (1 - p)), model)
    assert logits.shape == (1, 1, 33, 33, 33)
    assert np.isfinite(logits).all()

    # the second import into the same folder is refused, and --overwrite replaces it
    assert main(["import-checkpoint", str(google_ffn_dir / PREFIX), str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    cmd = ["import-checkpoint", str(google_ffn_dir / PREFIX), str(out), "--overwrite"]
    assert main(cmd) == 0


@pytest.mark.realdata
def test_import_without_meta_needs_fov_and_deltas(google_ffn_dir, tmp_path, capsys):
    for suffix in (".index", ".data-00000-of-00001"):
        shutil.copy(google_ffn_dir / f"{PREFIX}{suffix}", tmp_path / f"{PREFIX}{suffix}")
    out = tmp_path / "model"

    assert main(["import-checkpoint", str(tmp_path / PREFIX), str(out)]) == 2
    assert "--fov z,y,x and --deltas z,y,x" in capsys.readouterr().err
    assert not out.exists()

    cmd = ["import-checkpoint", str(tmp_path / PREFIX), str(out), "--fov", "33,33,33"]
    assert main([*cmd, "--deltas", "8,8,8"]) == 0
    assert load_model(out)[1].provenance["fov_size_from"] == "argument"


def test_import_of_a_non_checkpoint_writes_nothing(tmp_path, capsys):
    (tmp_path / "junk.index").write_bytes(b"\x00" * 100)
    out = tmp_path / "model"
    assert main(["import-checkpoint", str(tmp_path / "junk"), str(out)]) == 2
    assert "not a TensorFlow TensorBundle" in capsys.readouterr().err
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["junk.index"]


@pytest.mark.realdata
def test_import_into_a_missing_parent_is_refused(google_ffn_dir, tmp_path):
    with pytest.raises(UserInputError, match="does not exist"):
        import_google_checkpoint(google_ffn_dir / PREFIX, tmp_path / "no" / "such" / "dir")
    assert not (tmp_path / "no").exists()
