"""Write-then-rename: a user's existing data is replaced only once the new output is complete.

Replacing an existing ``dest`` takes two renames (``dest`` -> ``.dest.old-*``, then
``.dest.tmp-*`` -> ``dest``). A journal, ``.dest.replace.json``, naming both hidden siblings is
written before the first, so a crash between them is repaired by the next call for that path
(:func:`recover_replacement`: from :func:`check_destination`, :func:`commit` and when a reader finds
``dest`` missing): the old output comes back when ``dest`` is missing, and the old one is removed
when the new one is in place.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
import uuid
from pathlib import Path

from napari_connectome.errors import UserInputError


def _crash_point(step: str) -> None:
    """Does nothing. A crash test's own process replaces it with one that kills the process at
    ``step`` ("moved-aside": between the two renames, "moved-in": after the second)."""


_SIBLING_TAIL = re.compile(r"[a-z]+-[0-9a-f]{8}")


_UMASK: int | None = None


def umask() -> int:
    """This process's umask, read without changing it (``os.umask`` sets it, and another thread
    could create a file meanwhile)."""
    global _UMASK
    if _UMASK is None:
        try:
            with open("/proc/self/status") as f:
                line = next(ln for ln in f if ln.startswith("Umask:"))
            _UMASK = int(line.split()[1], 8)
        except (OSError, StopIteration, ValueError, IndexError):
            current = os.umask(0o022)
            os.umask(current)
            _UMASK = current
    return _UMASK


def normal_mode(path: str | os.PathLike, *, folder: bool = False) -> None:
    """Give a file or folder made by ``mkstemp``/``mkdtemp`` (0600/0700: readable by nobody else)
    the permissions a plain ``open``/``mkdir`` would, so a lab's shared outputs stay readable."""
    os.chmod(path, (0o777 if folder else 0o666) & ~umask())


def journal_path(dest: Path) -> Path:
    """The hidden sibling recording a replacement of ``dest`` in progress."""
    return dest.parent / f".{dest.name}.replace.json"


def _own_sibling(dest: Path, name: object) -> Path | None:
    """A hidden sibling of ``dest`` named in its journal, as :func:`temp_sibling` names them
    (``.NAME.TAG-xxxxxxxx``); anything else (another path, a user's ``.NAME.backup``) is never
    touched."""
    if not isinstance(name, str) or not name.startswith(f".{dest.name}."):
        return None
    if not _SIBLING_TAIL.fullmatch(name[len(dest.name) + 2 :]):
        return None
    return dest.parent / name


def _present(path: Path) -> bool:
    return path.exists() or path.is_symlink()


def recover_replacement(dest: str | os.PathLike) -> None:
    """Finish or undo a replacement of ``dest`` that a crash interrupted (no-op without a journal).

    ``dest`` missing: the previous output (``old``) is moved back, or the complete new one when the
    old is gone. ``dest`` present: the replacement either completed or never started, so whichever
    hidden sibling is left over goes.
    """
    dest = Path(dest)
    journal = journal_path(dest)
    if not journal.is_file():
        return
    try:
        entry = json.loads(journal.read_text())
        old = _own_sibling(dest, entry.get("old"))
        new = _own_sibling(dest, entry.get("new"))
    except (OSError, ValueError, AttributeError):
        old = new = None
    if old is None or new is None:
        raise UserInputError(
            f"{journal} records an interrupted replacement of {dest} but cannot be read: look at "
            f"{dest} and its hidden siblings (.{dest.name}.*), keep what you need, then delete it."
        )
    if not _present(dest):
        if _present(old):
            os.replace(old, dest)
        elif _present(new):
            os.replace(new, dest)
    for leftover in (old, new):
        if _present(leftover):
            remove_path(leftover)
    journal.unlink(missing_ok=True)


def check_destination(dest: Path, overwrite: bool) -> None:
    """Refuse an existing output without ``overwrite``, an existing output napari-connectome did
    not write even with it (see :mod:`napari_connectome.volumes.output_safety`), and an output
    whose folder does not exist. An interrupted earlier replacement is repaired first."""
    from napari_connectome.volumes.output_safety import refuse_unless_ours

    dest = Path(dest)
    recover_replacement(dest)
    if _present(dest):
        if not overwrite:
            raise UserInputError(
                f"{dest} already exists; choose another output path or pass --overwrite "
                "to replace it (overwrite=True from Python)."
            )
        refuse_unless_ours(dest)
    if not dest.parent.is_dir():
        raise UserInputError(f"the folder {dest.parent} does not exist; create it first.")


def temp_sibling(dest: Path, tag: str = "tmp") -> Path:
    """A hidden path next to ``dest`` (same filesystem, so the final rename is atomic)."""
    return dest.parent / f".{dest.name}.{tag}-{uuid.uuid4().hex[:8]}"


def remove_path(path: Path) -> None:
    """Delete a file, link or folder; a folder that a late writer refilled is removed again."""
    for _ in range(5):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        elif _present(path):
            path.unlink(missing_ok=True)
        if not _present(path):
            return
        time.sleep(0.05)


def _write_journal(dest: Path, old: Path, new: Path) -> Path:
    journal = journal_path(dest)
    tmp = journal.with_name(journal.name + f".{uuid.uuid4().hex[:8]}")
    with open(tmp, "w") as f:
        json.dump({"dest": dest.name, "old": old.name, "new": new.name}, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, journal)
    return journal


def commit(tmp: Path, dest: Path, overwrite: bool) -> Path:
    """Move the finished ``tmp`` (a sibling of ``dest``) to ``dest``; an existing ``dest`` is moved
    aside first, under a journal, and deleted only after the new one is in place."""
    recover_replacement(dest)
    if not _present(dest):
        os.replace(tmp, dest)
        return dest
    try:
        check_destination(dest, overwrite)  # it may have appeared, or changed, since the start
        old = temp_sibling(dest, "old")
        journal = _write_journal(dest, old, tmp)
    except BaseException:
        remove_path(tmp)
        raise
    try:
        os.replace(dest, old)
    except BaseException:
        journal.unlink(missing_ok=True)
        remove_path(tmp)
        raise
    _crash_point("moved-aside")
    try:
        os.replace(tmp, dest)
    except BaseException:
        os.replace(old, dest)
        journal.unlink(missing_ok=True)
        raise
    _crash_point("moved-in")
    remove_path(old)
    journal.unlink(missing_ok=True)
    return dest


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary sibling and rename, so a reader never sees half a file (with the
    permissions a plain ``open`` would give, not mkstemp's 0600)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(fd, 0o666 & ~umask())
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
