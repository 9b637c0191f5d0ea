"""What a user installs works: the wheel ships the napari manifest and resources, and napari's npe2
finds and validates the manifest in a clean virtual environment and in the editable dev install.

napari_connectome/napari.yaml and napari_connectome/resources are the files in use (real files, no
symlinks, so a wheel and a Windows checkout work alike); the top-level napari.yaml and resources/
are copies for readers of the repository (tests/test_core_without_napari.py checks them).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DIST = "napari-connectome"
# Build from a copy of what the build reads, so stale files in build/ (setuptools reuses it) cannot
# slip into the wheel, parallel builds share nothing, and data lying in the checkout is not copied.
BUILD_INPUTS = ("pyproject.toml", "README.md", "napari_connectome")
BUILD_INPUT_GLOBS = ("LICEN[CS]E*", "COPYING*", "NOTICE*", "AUTHORS*", "MANIFEST.in", "setup.*")
BUILD_OUTPUTS = shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc")

pytestmark = pytest.mark.timeout(600)


def _run(argv: list[str], *, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in argv], cwd=cwd, capture_output=True, text=True, timeout=timeout
    )


def _explain(result: subprocess.CompletedProcess[str]) -> str:
    return f"exit {result.returncode}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"


@pytest.fixture(scope="module")
def dists(tmp_path_factory) -> dict[str, Path]:
    """``python -m build`` on a copy of the checkout: an sdist, and a wheel built from it."""
    tmp = tmp_path_factory.mktemp("packaging")
    src = tmp / "src"
    src.mkdir()
    inputs = [ROOT / name for name in BUILD_INPUTS]
    inputs += [path for pattern in BUILD_INPUT_GLOBS for path in ROOT.glob(pattern)]
    for path in inputs:
        if path.is_symlink() or path.is_file():
            shutil.copy2(path, src / path.name, follow_symlinks=False)
        elif path.is_dir():
            shutil.copytree(path, src / path.name, symlinks=True, ignore=BUILD_OUTPUTS)
    out = tmp / "dist"
    result = _run([sys.executable, "-m", "build", "--outdir", out, src], cwd=tmp)
    assert result.returncode == 0, _explain(result)
    (wheel,) = out.glob("napari_connectome-*.whl")
    (sdist,) = out.glob("napari_connectome-*.tar.gz")
    return {"wheel": wheel, "sdist": sdist}


def test_wheel_ships_manifest_resources_and_every_command_module(dists):
    with zipfile.ZipFile(dists["wheel"]) as wheel:
        names = set(wheel.namelist())
        shipped_manifest = yaml.safe_load(wheel.read("napari_connectome/napari.yaml"))
        (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        entry_points_text = wheel.read(entry_points).decode()

    assert shipped_manifest == yaml.safe_load((ROOT / "napari_connectome/napari.yaml").read_text())
    assert "[napari.manifest]\nnapari-connectome = napari_connectome:napari.yaml" in (
        entry_points_text
    )
    resources = [
        p.relative_to(ROOT / "napari_connectome/resources").as_posix()
        for p in (ROOT / "napari_connectome/resources").rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    ]
    assert resources, "resources/ is empty"
    missing = [r for r in resources if f"napari_connectome/resources/{r}" not in names]
    assert not missing, f"resources missing from the wheel: {missing}"
    # Every command napari may call must be importable from the wheel (its module is shipped).
    for command in shipped_manifest["contributions"].get("commands", []):
        module = command["python_name"].split(":")[0].replace(".", "/")
        assert f"{module}.py" in names or f"{module}/__init__.py" in names, command


def test_sdist_carries_the_manifest_as_a_real_file(dists):
    import tarfile

    with tarfile.open(dists["sdist"]) as sdist:
        members = {m.name.split("/", 1)[1]: m for m in sdist.getmembers() if "/" in m.name}
    assert members["napari_connectome/napari.yaml"].isfile()
    assert any(name.startswith("napari_connectome/resources/") for name in members)


def test_clean_venv_finds_a_valid_manifest_in_the_wheel(dists, tmp_path):
    venv = tmp_path / "venv"
    created = _run([sys.executable, "-m", "venv", venv], cwd=tmp_path)
    assert created.returncode == 0, _explain(created)
    pip = [venv / "bin" / "python", "-m", "pip", "--disable-pip-version-check", "install", "-q"]
    installed = _run([*pip, "--no-deps", dists["wheel"]], cwd=tmp_path)
    assert installed.returncode == 0, _explain(installed)
    # The manifest is read without importing the plugin's dependencies: npe2 alone suffices.
    npe2 = _run([*pip, f"npe2=={metadata.version('npe2')}"], cwd=tmp_path)
    if npe2.returncode != 0:
        pytest.skip(f"could not install npe2 from PyPI into a clean venv: {_explain(npe2)}")

    validated = _run([venv / "bin" / "npe2", "validate", DIST], cwd=tmp_path)
    assert validated.returncode == 0, _explain(validated)
    assert "valid" in validated.stdout

    probe = (
        "import importlib.resources as r\n"
        "from npe2 import PluginManifest\n"
        f"m = PluginManifest.from_distribution({DIST!r})\n"
        "print(m.name)\n"
        "print(r.files('napari_connectome') / 'napari.yaml')\n"
    )
    found = _run([venv / "bin" / "python", "-c", probe], cwd=tmp_path)
    assert found.returncode == 0, _explain(found)
    name, manifest_path = found.stdout.split()
    assert name == DIST
    assert Path(manifest_path).is_relative_to(venv)
    assert Path(manifest_path).is_file()
    assert not Path(manifest_path).is_symlink()


def test_editable_install_manifest_is_valid_and_its_commands_import():
    result = _run(
        [sys.executable, "-m", "npe2", "validate", DIST, "--imports"], cwd=ROOT, timeout=300
    )
    assert result.returncode == 0, _explain(result)
    assert "valid" in result.stdout

    (entry_point,) = metadata.entry_points(group="napari.manifest", name=DIST)
    assert entry_point.value == "napari_connectome:napari.yaml"
    import importlib.resources

    manifest = Path(str(importlib.resources.files("napari_connectome") / "napari.yaml"))
    assert manifest == ROOT / "napari_connectome" / "napari.yaml"
    assert manifest.is_file()
    assert not manifest.is_symlink()


CORE_JOB = """
import json, sys
import numpy as np, zarr
img = np.full((32, 48, 48), 200, np.uint8)
img[:, :, 23:25] = 10
zarr.create_array("em.zarr", shape=img.shape, chunks=(16, 16, 16), dtype="uint8")[...] = img
json.dump({"name": "core", "input": "em.zarr", "output": sys.argv[1], "block_shape": [32, 32, 32],
           "overlap": [8, 8, 8], "segmenter": {"kind": "watershed", "threshold": 128},
           "pyramid_levels": 1, "backend": {"kind": "local", "workers": 1}}, open("job.yaml", "w"))
"""


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_core_only_install_in_a_fresh_venv_runs_a_job(dists, tmp_path):
    """`pip install napari-connectome` into an empty venv (PyPI; torch's CPU build from PyTorch's
    index, as README says): napari and Qt are not installed, `run-job --check` and a whole job run.
    Needs the network and ~1 GB; a few minutes."""
    venv = tmp_path / "venv"
    created = _run([sys.executable, "-m", "venv", venv], cwd=tmp_path)
    assert created.returncode == 0, _explain(created)
    py = venv / "bin" / "python"
    pip = [py, "-m", "pip", "--disable-pip-version-check", "install", "-q"]
    cpu_torch = [*pip, "torch", "--index-url", "https://download.pytorch.org/whl/cpu"]
    for argv in (cpu_torch, [*pip, dists["wheel"]]):
        res = _run(argv, cwd=tmp_path, timeout=3000)
        if res.returncode != 0 and "Could not find a version" in res.stderr + res.stdout:
            pytest.skip(f"no network for pip here: {_explain(res)}")
        assert res.returncode == 0, _explain(res)
    for gui in ("napari", "qtpy", "PyQt5", "magicgui", "npe2"):
        absent = _run([py, "-c", f"import {gui}"], cwd=tmp_path)
        assert absent.returncode != 0, f"{gui} was installed with the core"
    out = tmp_path / "seg.ome.zarr"
    made = _run([py, "-c", CORE_JOB, out], cwd=tmp_path)
    assert made.returncode == 0, _explain(made)
    cli = venv / "bin" / "napari-connectome"
    checked = _run([cli, "run-job", "--check", "job.yaml"], cwd=tmp_path)
    assert checked.returncode == 0, _explain(checked)
    ran = _run([cli, "run-job", "--quiet", "job.yaml"], cwd=tmp_path, timeout=900)
    assert ran.returncode == 0, _explain(ran)
    assert (out / "0" / "zarr.json").is_file()
    demo = _run([cli, "demo"], cwd=tmp_path)
    assert demo.returncode == 2
    assert "napari-connectome[napari]" in demo.stderr
