"""The core works where napari is not installed (a cluster node: `pip install napari-connectome`).

In subprocesses whose imports of napari, Qt, magicgui, npe2 and vispy fail (a meta-path finder
raising ImportError, installed by a ``sitecustomize`` on ``PYTHONPATH``, so Dask's worker
processes get it too): every core module imports, ``run-job --check`` checks a spec, a small job
runs to the end, and a command that needs the GUI says what to install with exit 2. Nothing of
napari or Qt may end up imported.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
BLOCKED = ("napari", "qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "magicgui", "npe2", "vispy",
           "superqt", "psygnal")  # fmt: skip
GUI_EXTRA = {"napari", "magicgui", "qtpy", "npe2", "psygnal"}

SITECUSTOMIZE = f"""
import sys

BLOCKED = {BLOCKED!r}


class _NoGui:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{{name}} is blocked: the core must work without napari and Qt")
        return None


sys.meta_path.insert(0, _NoGui())
"""

PROBE = """
import importlib, json, pkgutil, sys
import napari_connectome

names = sorted(
    m.name for m in pkgutil.walk_packages(napari_connectome.__path__, "napari_connectome.")
    if not m.name.startswith("napari_connectome.gui") and not m.name.endswith("__main__")
)
for name in names:
    importlib.import_module(name)
leaked = sorted({m.split(".")[0] for m in sys.modules} & set(BLOCKED))
print(json.dumps({"modules": names, "leaked": leaked}))
"""


@pytest.fixture
def no_gui_env(tmp_path) -> dict[str, str]:
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QT_", "NAPARI_"))}
    env["PYTHONPATH"] = os.pathsep.join([str(site), str(ROOT)])
    env["NAPARI_CONNECTOME_CONFIG_DIR"] = str(tmp_path / "config")
    return env


def _run(argv: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=500, check=False
    )


def test_the_blocker_blocks(no_gui_env, tmp_path):
    res = _run([sys.executable, "-c", "import napari"], no_gui_env, tmp_path)
    assert res.returncode != 0
    assert "blocked" in res.stderr


def test_every_core_module_imports_without_napari_or_qt(no_gui_env, tmp_path):
    res = _run([sys.executable, "-c", f"BLOCKED = {BLOCKED!r}\n{PROBE}"], no_gui_env, tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout.splitlines()[-1])
    assert len(out["modules"]) > 80  # the walk really found the package
    assert {"napari_connectome.cli", "napari_connectome.jobs.pipeline"} <= set(out["modules"])
    assert out["leaked"] == []


def _small_job(tmp_path: Path, **segmenter) -> Path:
    import zarr

    if (tmp_path / "em.zarr").exists():
        return _spec(tmp_path, segmenter)
    img = np.full((32, 48, 48), 200, np.uint8)
    img[:, :, 23:25] = 10  # a dark membrane: two cells
    arr = zarr.create_array(tmp_path / "em.zarr", shape=img.shape, chunks=(16, 16, 16),
                            dtype="uint8")  # fmt: skip
    arr[...] = img
    return _spec(tmp_path, segmenter)


def _spec(tmp_path: Path, segmenter: dict) -> Path:
    spec = {
        "name": "core-only",
        "input": str(tmp_path / "em.zarr"),
        "output": str(tmp_path / "seg.ome.zarr"),
        "block_shape": [32, 32, 32],
        "overlap": [8, 8, 8],
        "segmenter": segmenter,
        "pyramid_levels": 1,
        "backend": {"kind": "local", "workers": 1},
    }
    path = tmp_path / "job.yaml"
    path.write_text(json.dumps(spec))  # JSON is YAML
    return path


def test_run_job_checks_and_runs_without_napari(no_gui_env, tmp_path):
    cli = [sys.executable, "-m", "napari_connectome"]
    ffn = _small_job(tmp_path, kind="ffn", model="default")  # the FOV read from its config
    checked = _run([*cli, "run-job", "--check", str(ffn)], no_gui_env, tmp_path)
    assert checked.returncode == 0, checked.stderr[-3000:]
    assert json.loads(checked.stdout)["ok"] is True

    job = _small_job(tmp_path, kind="watershed", threshold=128)
    ran = _run([*cli, "run-job", "--quiet", str(job)], no_gui_env, tmp_path)
    assert ran.returncode == 0, ran.stderr[-3000:]
    import zarr

    labels = np.asarray(zarr.open_array(tmp_path / "seg.ome.zarr" / "0", mode="r"))
    assert labels.shape == (32, 48, 48)
    assert len(np.unique(labels[labels > 0])) == 2  # the two cells, across the block seams


def test_a_gui_command_says_what_to_install(no_gui_env, tmp_path):
    res = _run([sys.executable, "-m", "napari_connectome", "demo"], no_gui_env, tmp_path)
    assert res.returncode == 2, res.stderr[-3000:]
    assert "napari-connectome[napari]" in res.stderr
    assert "Traceback" not in res.stderr


def test_the_core_dependencies_carry_no_gui_and_the_napari_extra_does():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]

    def names(reqs: list[str]) -> set[str]:
        return {r.split(";")[0].split("[")[0].split(">")[0].split("=")[0].strip().lower()
                for r in reqs}  # fmt: skip

    core = names(project["dependencies"])
    extras = project["optional-dependencies"]
    assert not core & (GUI_EXTRA | {"pyqt5", "pyqt6", "vispy"})
    assert names(extras["napari"]) >= GUI_EXTRA
    assert "napari-connectome[napari" in extras["all"][0]
    assert "pyqt5" in extras["all"][0]


def test_every_third_party_import_is_declared():
    """Each package the code imports (at module level or lazily) is a dependency: of the core for
    core modules, of [napari] (or the core) for gui modules; optional ones are caught where they
    are imported (ImportError -> a message naming the package) and listed here."""
    from importlib.metadata import packages_distributions

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]

    def names(reqs: list[str]) -> set[str]:
        out = set()
        for r in reqs:
            n = r.split(";")[0].split("[")[0].split(">")[0].split("=")[0].split("<")[0].strip()
            out.add(n.lower().replace("_", "-"))
        return out

    core = names(project["dependencies"])
    gui = core | names(extras["napari"])
    optional = {"brotli", "zstandard", "google-crc32c", "neuroglancer", "wkw", "matplotlib"}
    dists = packages_distributions()
    missing = []
    for path in (ROOT / "napari_connectome").rglob("*.py"):
        rel = path.relative_to(ROOT).as_posix()
        allowed = gui if rel.startswith("napari_connectome/gui/") else core
        tree = ast.parse(path.read_text())
        guarded = {id(n) for t in ast.walk(tree) if isinstance(t, ast.Try) and _catches_import(t)
                   for stmt in t.body for n in ast.walk(stmt)}  # fmt: skip
        for node in ast.walk(tree):
            if id(node) in guarded:
                continue  # an optional import with its own "pip install ..." message
            if isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                mods = [node.module]
            else:
                continue
            for mod in mods:
                top = mod.split(".")[0]
                if top in sys.stdlib_module_names or top in ("napari_connectome", "__future__"):
                    continue
                dist = {d.lower().replace("_", "-") for d in dists.get(top, [top])}
                if not dist & (allowed | optional):
                    missing.append(f"{rel}: {mod} ({', '.join(sorted(dist))})")
    assert not missing, "imported but not declared in pyproject.toml:\n" + "\n".join(missing)


def _catches_import(node) -> bool:
    names = []
    for h in node.handlers:
        t = h.type
        names += [
            e.id for e in (t.elts if isinstance(t, ast.Tuple) else [t]) if isinstance(e, ast.Name)
        ]
    return bool({"ImportError", "ModuleNotFoundError"} & set(names))


@pytest.mark.skipif(not (ROOT / ".git").exists(), reason="not a git checkout")
def test_no_symlinks_in_the_checkout():
    """A Windows checkout (core.symlinks=false) turns a symlink into a text file naming its
    target: the package must not rely on one."""
    res = subprocess.run(["git", "ls-files", "-s"], cwd=ROOT, capture_output=True, text=True,
                         check=True)  # fmt: skip
    links = [line.split("\t")[1] for line in res.stdout.splitlines() if line.startswith("120000")]
    assert links == []


def test_the_root_napari_yaml_and_resources_are_copies_of_the_package_files():
    """napari.yaml and resources/ at the top level (as users asked) equal what the package
    ships (napari_connectome/napari.yaml, napari_connectome/resources): the package's files are
    the ones in use; `scripts/sync-root-copies` refreshes the top-level copies."""
    pkg = ROOT / "napari_connectome"
    assert (ROOT / "napari.yaml").read_bytes() == (pkg / "napari.yaml").read_bytes()

    def files(root: Path) -> dict[str, bytes]:
        paths = [p for p in sorted(root.rglob("*")) if p.is_file()]
        return {p.relative_to(root).as_posix(): p.read_bytes() for p in paths
                if "__pycache__" not in p.parts}  # fmt: skip

    top, shipped = files(ROOT / "resources"), files(pkg / "resources")
    stale = sorted(k for k in top.keys() | shipped.keys() if top.get(k) != shipped.get(k))
    assert not stale, (
        f"resources/ differs from napari_connectome/resources in {stale}: edit the package's "
        "files, then run scripts/sync-root-copies"
    )
    assert not (pkg / "napari.yaml").is_symlink()
    assert not (pkg / "resources").is_symlink()
