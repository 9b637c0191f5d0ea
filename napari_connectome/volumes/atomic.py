"""Write-then-rename: a user's existing data is replaced only once the new output is complete."""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

from napari_connectome.errors import UserInputError


def check_destination(dest: Path, overwrite: bool) -> None:
    """Refuse an existing output without ``overwrite`` and an output whose folder does not exist."""
    if dest.exists() and not overwrite:
        raise UserInputError(
            f"{dest} already exists; choose another output path or pass --overwrite "
            "(overwrite=True) to replace it."
        )
    if not dest.parent.is_dir():
        raise UserInputError(f"the folder {dest.parent} does not exist; create it first.")


def temp_sibling(dest: Path, tag: str = "tmp") -> Path:
    """A hidden path next to ``dest`` (same filesystem, so the final rename is atomic)."""
    return dest.parent / f".{dest.name}.{tag}-{uuid.uuid4().hex[:8]}"


def remove_path(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink(missing_ok=True)


def commit(tmp: Path, dest: Path, overwrite: bool) -> Path:
    """Move the finished ``tmp`` to ``dest``; an existing ``dest`` is moved aside first and deleted
    only after the new one is in place."""
    if dest.exists() or dest.is_symlink():
        if not overwrite:
            remove_path(tmp)
            check_destination(dest, overwrite)
        old = temp_sibling(dest, "old")
        os.replace(dest, old)
        try:
            os.replace(tmp, dest)
        except BaseException:
            os.replace(old, dest)
            raise
        remove_path(old)
    else:
        os.replace(tmp, dest)
    return dest
