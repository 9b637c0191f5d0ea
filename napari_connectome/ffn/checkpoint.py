"""Our FFN model format (a directory: ``model.safetensors`` + ``config.json``) and the TF importer.

Why safetensors: it cannot execute code on load (unlike pickle), is memory-mappable and language
neutral. Why a directory: the weights and the settings they need (:mod:`.config`) travel together.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_connectome.errors import UserInputError
from napari_connectome.ffn.config import ModelConfig
from napari_connectome.ffn.model import FFNArchitecture, build_model
from napari_connectome.ffn.options import InferenceOptions

if TYPE_CHECKING:
    import torch

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"


def is_model_dir(path: str | Path) -> bool:
    """True when ``path`` looks like a saved model (both files present)."""
    p = Path(path)
    return (p / WEIGHTS_FILE).is_file() and (p / CONFIG_FILE).is_file()


def _check_output_dir(model_dir: Path, overwrite: bool) -> None:
    """An existing model directory is replaced only with ``overwrite``, and only when it holds
    nothing but a model as :func:`save_model` writes it (or nothing): never a link, and never a
    folder with anything else in it (the checkpoint it came from, notes)."""
    if model_dir.is_symlink():
        raise UserInputError(
            f"{model_dir} is a link: a model is written to a directory, never through a link; "
            "choose another directory"
        )
    if model_dir.exists():
        if not overwrite:
            raise UserInputError(
                f"{model_dir} already exists; choose a new directory or pass --overwrite"
            )
        if not model_dir.is_dir():
            raise UserInputError(
                f"{model_dir} exists and is not a directory; refusing to replace it"
            )
        names = set(os.listdir(model_dir))
        ours = {WEIGHTS_FILE, CONFIG_FILE}
        if names and not (is_model_dir(model_dir) and names <= ours):
            shown = ", ".join((sorted(names - ours) or sorted(names))[:5])
            raise UserInputError(
                f"{model_dir} holds files that are not a napari-connectome model "
                f"({shown}); refusing to replace it even with overwrite: move them out, or "
                "choose a new directory"
            )
    if not model_dir.parent.is_dir():
        raise UserInputError(f"parent directory {model_dir.parent} does not exist; create it first")


def save_model(
    model_dir: str | Path,
    model: torch.nn.Module | dict[str, Any],
    config: ModelConfig,
    *,
    overwrite: bool = False,
) -> Path:
    """Write ``model`` (a module or a state dict) and ``config`` as a model directory, atomically.

    Files go to a temporary sibling directory that is renamed into place at the end, so a crash or
    an error never leaves a half-written model; an existing model is replaced only with
    ``overwrite``.
    """
    from safetensors.torch import save_file

    model_dir = Path(model_dir)
    _check_output_dir(model_dir, overwrite)
    state = model if isinstance(model, dict) else model.state_dict()
    _check_state_dict(state, config, source="the model being saved")
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
    tmp = Path(tempfile.mkdtemp(prefix=f".{model_dir.name}.", dir=model_dir.parent))
    try:
        _save_weights(save_file, tensors, tmp / WEIGHTS_FILE)
        config.save(tmp / CONFIG_FILE)
        _apply_umask(tmp)
        if model_dir.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{model_dir.name}.old.", dir=model_dir.parent))
            os.replace(model_dir, old / "m")
            os.replace(tmp, model_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, model_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return model_dir


def _save_weights(save_file: Any, tensors: dict[str, Any], path: Path) -> None:
    """safetensors reports a failed write as ``SafetensorError("... (os error 28)")``; raise it as
    the ``OSError`` it is, so that a full or read-only disk reads as such (errno, file name)."""
    from safetensors import SafetensorError

    try:
        save_file(tensors, str(path), metadata={"format": "pt"})
    except SafetensorError as exc:
        match = re.search(r"os error (\d+)", str(exc))
        if match is None:
            raise
        code = int(match.group(1))
        raise OSError(code, os.strerror(code), str(path)) from exc


def _apply_umask(directory: Path) -> None:
    """mkdtemp makes 0700 directories; give the model the permissions a normal mkdir would."""
    umask = os.umask(0)
    os.umask(umask)
    directory.chmod(0o777 & ~umask)
    for f in directory.iterdir():
        f.chmod(0o666 & ~umask)


def _check_state_dict(state: dict[str, Any], config: ModelConfig, source: str) -> None:
    """Raise naming the first tensor whose presence or shape disagrees with ``config``."""
    expected = _expected_shapes(config.architecture)
    for name, shape in expected.items():
        if name not in state:
            raise UserInputError(
                f"{source} lacks tensor {name!r} that the config's architecture "
                f"(depth {config.architecture.depth}, {config.architecture.features} features) "
                "needs; the config does not match these weights"
            )
        got = tuple(state[name].shape)
        if got != shape:
            raise UserInputError(
                f"{source}: tensor {name!r} has shape {got} but the config's architecture "
                f"expects {shape}; the config does not match these weights"
            )
    extra = [k for k in state if k not in expected]
    if extra:
        raise UserInputError(
            f"{source} has tensor {extra[0]!r} that the config's architecture "
            f"(depth {config.architecture.depth}) does not have; the config does not match "
            "these weights"
        )


def _expected_shapes(arch: FFNArchitecture) -> dict[str, tuple[int, ...]]:
    f = arch.features
    shapes: dict[str, tuple[int, ...]] = {
        "conv0_a.weight": (f, 2, 3, 3, 3),
        "conv0_a.bias": (f,),
        "conv0_b.weight": (f, f, 3, 3, 3),
        "conv0_b.bias": (f,),
    }
    for i in range(1, arch.depth):
        for s in ("a", "b"):
            shapes[f"conv{i}_{s}.weight"] = (f, f, 3, 3, 3)
            shapes[f"conv{i}_{s}.bias"] = (f,)
    shapes["conv_lom.weight"] = (1, f, 1, 1, 1)
    shapes["conv_lom.bias"] = (1,)
    return shapes


def load_model(
    model_dir: str | Path, device: str | torch.device = "cpu"
) -> tuple[torch.nn.Module, ModelConfig]:
    """Load a model directory: the module in eval mode on ``device`` and its :class:`ModelConfig`.

    ``model_dir`` may also be a zoo name (e.g. ``google-fib25``), see :func:`.zoo.get_model`.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(model_dir)
    if not path.exists() and os.sep not in str(model_dir):
        from napari_connectome.ffn.zoo import get_model

        path = get_model(str(model_dir))
    if not path.is_dir():
        raise UserInputError(
            f"model {model_dir} not found: give a model directory (with {WEIGHTS_FILE} and "
            f"{CONFIG_FILE}) or a zoo name from `napari-connectome models`"
        )
    if not (path / WEIGHTS_FILE).is_file():
        raise UserInputError(
            f"{path} has no {WEIGHTS_FILE}; for a TensorFlow checkpoint run "
            "`napari-connectome import-checkpoint TF_PREFIX MODEL_DIR` first"
        )
    config = ModelConfig.load(path / CONFIG_FILE)
    try:
        state = load_file(str(path / WEIGHTS_FILE), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise UserInputError(
            f"{path / WEIGHTS_FILE} is not a readable safetensors file ({exc})"
        ) from None
    _check_state_dict(state, config, source=str(path / WEIGHTS_FILE))
    model = build_model(config.architecture)
    model.load_state_dict(state, strict=True)
    model.to(device)
    model.eval()
    return model, config


# --------------------------------------------------------------------------- google/ffn import


def tf_to_state_dict(
    variables: dict[str, np.ndarray], scope: str = "seed_update"
) -> dict[str, Any]:
    """Map google/ffn ``ConvStack3DFFNModel`` variables onto our module's state dict.

    TF conv kernels are [kd, kh, kw, in, out] (NDHWC, z/y/x), torch wants [out, in, kd, kh, kw];
    the input channel order (image, seed) equals our ``cat([image, logits])``. Optimiser slots are
    ignored.
    """
    import torch

    prefix = f"{scope}/" if scope else ""
    state: dict[str, Any] = {}
    for name, value in variables.items():
        if not name.startswith(prefix):
            continue
        parts = name[len(prefix) :].split("/")
        if len(parts) != 2 or parts[1] not in ("weights", "biases"):
            continue  # optimiser slots (weights/Adam...) and anything else
        layer, kind = parts
        if kind == "weights":
            if value.ndim != 5:
                raise UserInputError(
                    f"variable {name!r} has shape {value.shape}, not a 3-D conv kernel"
                )
            state[f"{layer}.weight"] = torch.from_numpy(
                np.ascontiguousarray(value.transpose(4, 3, 0, 1, 2), dtype=np.float32)
            )
        else:
            state[f"{layer}.bias"] = torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32))
    return state


def architecture_from_variables(
    variables: dict[str, np.ndarray], scope: str = "seed_update"
) -> tuple[int, int]:
    """(depth, features) of a conv-stack checkpoint, read from its variable names and shapes."""
    key = f"{scope}/conv0_a/weights"
    if key not in variables:
        raise UserInputError(
            f"checkpoint has no variable {key!r}; it is not a google/ffn ConvStack3DFFNModel "
            "checkpoint"
        )
    features = int(variables[key].shape[-1])
    depth = 1
    while f"{scope}/conv{depth}_a/weights" in variables:
        depth += 1
    return depth, features


def read_meta_shapes(meta_path: str | Path) -> dict[str, tuple[int, ...]]:
    """Static shapes of the Placeholder nodes in a TF MetaGraphDef (``.meta``), by node name.

    google/ffn's training graph has ``patches`` (the FOV, [batch, z, y, x, 1]) and ``eval_labels``
    (the FOV grown by ``deltas`` on every side), which is how fov_size and deltas are recovered.
    """
    from napari_connectome.ffn.tensorbundle import _NotABundle, _proto_fields

    def shape(buf: bytes) -> tuple[int, ...]:
        dims = []
        for f, dim in _proto_fields(buf):
            if f == 2:
                size = next((v for ff, v in _proto_fields(dim) if ff == 1), 0)
                dims.append(size - (1 << 64) if size >= 1 << 63 else size)
        return tuple(dims)

    out: dict[str, tuple[int, ...]] = {}
    try:
        top = _proto_fields(Path(meta_path).read_bytes())
        for graph in (v for f, v in top if f == 2):
            for node in (v for f, v in _proto_fields(graph) if f == 1):
                fl = _proto_fields(node)
                ops = [v for f, v in fl if f == 2]
                if not ops or ops[0] != b"Placeholder":
                    continue
                name = next(v for f, v in fl if f == 1).decode()
                for attr in (v for f, v in fl if f == 5):
                    kv = dict(_proto_fields(attr))
                    if kv.get(1) == b"shape" and 2 in kv:  # AttrValue.shape
                        for f, s in _proto_fields(kv[2]):
                            if f == 7 and shape(s):
                                out.setdefault(name, shape(s))
                    elif kv.get(1) == b"_output_shapes" and 2 in kv:  # AttrValue.list.shape[0]
                        for f, lst in _proto_fields(kv[2]):
                            shapes = (
                                [s for ff, s in _proto_fields(lst) if ff == 7] if f == 1 else []
                            )
                            if shapes and shape(shapes[0]):
                                out[name] = shape(shapes[0])
    except (_NotABundle, StopIteration, UnicodeDecodeError, IndexError):
        return {}
    return out


def _fov_and_deltas_from_meta(
    prefix: Path,
) -> tuple[tuple[int, ...] | None, tuple[int, ...] | None]:
    meta = Path(f"{prefix}.meta")
    if not meta.is_file():
        return None, None
    shapes = read_meta_shapes(meta)
    fov = shapes.get("patches")
    fov = tuple(fov[1:4]) if fov and len(fov) == 5 and min(fov[1:4]) > 0 else None
    ev = shapes.get("eval_labels")
    deltas = None
    if (
        fov
        and ev
        and len(ev) == 5
        and all((e - f) % 2 == 0 and e >= f for e, f in zip(ev[1:4], fov))
    ):
        deltas = tuple((e - f) // 2 for e, f in zip(ev[1:4], fov))
    return fov, deltas


def _parse_zyx(value: Any, name: str) -> tuple[int, int, int] | None:
    if value is None:
        return None
    if isinstance(value, str):
        parts = [p for p in value.replace("x", ",").split(",") if p.strip()]
        try:
            nums = [int(p) for p in parts]
        except ValueError:
            raise UserInputError(
                f"{name} must be integers z,y,x (e.g. 33,33,33), got {value!r}"
            ) from None
    elif isinstance(value, int):
        nums = [value] * 3
    else:
        nums = [int(v) for v in value]
    if len(nums) == 1:
        nums = nums * 3
    if len(nums) != 3:
        raise UserInputError(f"{name} needs three integers z,y,x, got {value!r}")
    return (nums[0], nums[1], nums[2])


def import_google_checkpoint(
    tf_prefix: str | Path,
    model_dir: str | Path,
    *,
    fov_size: Any = None,
    deltas: Any = None,
    image_mean: float = 128.0,
    image_stddev: float = 33.0,
    inference: InferenceOptions | None = None,
    overwrite: bool = False,
    provenance: dict[str, Any] | None = None,
) -> ModelConfig:
    """Convert a google/ffn ``ConvStack3DFFNModel`` TF checkpoint into a model directory.

    depth and features come from the variables; fov_size and deltas (z, y, x) from the arguments,
    else from the ``.meta`` graph next to the checkpoint; without either, the user must give them.
    """
    from napari_connectome.ffn.tensorbundle import read_tensorbundle

    prefix = Path(tf_prefix)
    if prefix.suffix == ".index":
        prefix = prefix.with_suffix("")
    fov = _parse_zyx(fov_size, "--fov")
    dl = _parse_zyx(deltas, "--deltas")
    if not np.isfinite(image_mean):
        raise UserInputError(f"image_mean must be a finite number, not {image_mean}")
    if not (np.isfinite(image_stddev) and image_stddev > 0):
        raise UserInputError(
            f"image_stddev must be a finite number > 0, not {image_stddev} (the model divides "
            "the image by it)"
        )
    model_dir = Path(model_dir)
    _check_output_dir(model_dir, overwrite)  # refuse before reading anything big
    variables = read_tensorbundle(prefix, skip_slots=True)
    depth, features = architecture_from_variables(variables)
    meta_fov, meta_deltas = _fov_and_deltas_from_meta(prefix)
    fov_source = "argument" if fov else "meta graph"
    fov = fov or meta_fov
    deltas_source = "argument" if dl else "meta graph"
    dl = dl or meta_deltas
    if fov is None or dl is None:
        raise UserInputError(
            f"cannot tell the {'FOV size' if fov is None else 'deltas'} of {prefix} (no usable "
            f"{prefix}.meta); pass --fov z,y,x and --deltas z,y,x as in the model's model_args"
        )
    try:
        arch = FFNArchitecture(depth=depth, features=features, fov_size=fov, deltas=dl)
    except ValueError as exc:
        raise UserInputError(str(exc)) from None
    step = variables.get("global_step")
    prov = {
        "source": "google/ffn TensorFlow checkpoint",
        "tf_checkpoint": prefix.name,
        "global_step": int(step) if step is not None else None,
        "fov_size_from": fov_source,
        "deltas_from": deltas_source,
        **(provenance or {}),
    }
    config = ModelConfig(
        architecture=arch,
        image_mean=float(image_mean),
        image_stddev=float(image_stddev),
        inference=inference or InferenceOptions(),
        provenance=prov,
    )
    state = tf_to_state_dict(variables)
    save_model(model_dir, state, config, overwrite=overwrite)
    return config
