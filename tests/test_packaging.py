"""What a user installs works: the wheel ships the napari manifest and resources, and napari's npe2
finds and validates the manifest in a clean virtual environment and in the editable dev install.

napari.yaml and resources/ live at the top level (as our users asked); napari_connectome/napari.yaml
and napari_connectome/resources are symlinks to them, which the build resolves into real files.
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
BUILD_INPUTS = ("pyproject.toml", "README.md", "napari.yaml", "resources", "napari_connectome")
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

    assert shipped_manifest == yaml.safe_load((ROOT / "napari.yaml").read_text())
    assert "[napari.manifest]\nnapari-connectome = napari_connectome:napari.yaml" in (
        entry_points_text
    )
    resources = [
        p.relative_to(ROOT / "resources").as_posix()
        for p in (ROOT / "resources").rglob("*")
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
    assert manifest.resolve() == (ROOT / "napari.yaml").resolve()
