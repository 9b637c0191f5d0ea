"""Expected failures of the machine, not of our code, as one-line messages for the CLI.

Why here and not in every command: a read-only folder, a full disk or a mistyped path can hit any
write or open deep inside zarr, h5py or torch; catching them at each call would be many copies of
the same guess. ``main`` asks :func:`explain` about an exception that escaped a command; only
``OSError``\\ s with an errno that names a condition of the disk (and, for a missing path, a file
name that is one of the paths the user typed) get a message. Everything else is a bug and keeps
its traceback.
"""

from __future__ import annotations

import argparse
import errno
import os
import re
import select
import sys
from pathlib import Path

NOT_WRITABLE = {errno.EACCES, errno.EPERM, errno.EROFS}
NO_SPACE = {errno.ENOSPC, errno.EDQUOT}
BAD_PATH = {errno.ENOENT, errno.ENOTDIR, errno.EISDIR}

# h5py reports the file inside its message: "unable to open file: name = 'x.h5', errno = 30, ..."
_H5_NAME = re.compile(r"\b(?:file)?name = '([^']+)'")


def user_paths(args: argparse.Namespace) -> list[str]:
    """Every path-like text on the command line (``file.h5:dataset`` also as ``file.h5``)."""
    out: list[str] = []
    for value in vars(args).values():
        values = value if isinstance(value, (list, tuple)) else [value]
        for v in values:
            if isinstance(v, (str, Path)) and str(v):
                text = str(v)
                out.append(text)
                if ":" in text:
                    out.append(text.rpartition(":")[0])
    return out


def _filename(exc: OSError) -> str | None:
    if exc.filename:
        return os.fsdecode(exc.filename)
    match = _H5_NAME.search(str(exc))
    return match.group(1) if match else None


def _typed_path_of(name: str, paths: list[str], *, siblings: bool = True) -> str | None:
    """The typed path that ``name`` belongs to: the path itself, a file inside it, a folder above
    it, or (``siblings``) a hidden temporary sibling of it (``.dest.tmp-*``, where outputs are
    assembled)."""
    target = os.path.abspath(name)
    for p in paths:
        typed = os.path.abspath(os.path.expanduser(p))
        if (
            target == typed
            or target.startswith(typed + os.sep)
            or typed.startswith(target + os.sep)
        ):
            return p
        if not siblings:
            continue
        here = Path(target)
        while here.parent != here and not here.name.startswith("."):
            here = here.parent
        # ``.dest.tmp-*``, or a temporary of one (``..dest.segment-*.tmp-*``)
        if here.name.lstrip(".").startswith(f"{Path(typed).name}.") and str(here.parent) == str(
            Path(typed).parent
        ):
            return p
    return None


def _abs(typed: str) -> str:
    return os.path.abspath(os.path.expanduser(typed))


def _folder(name: str, paths: list[str]) -> str:
    """The folder a message should name: the user's own output rather than a temporary sibling,
    else the nearest existing folder holding ``name``."""
    typed = _typed_path_of(name, paths)
    path = Path(os.path.expanduser(typed)) if typed else Path(name)
    while not path.is_dir() and path.parent != path:
        path = path.parent
    return str(path)


def explain(exc: BaseException, args: argparse.Namespace) -> str | None:
    """A message for an expected failure of the disk or of a typed path; None for a bug."""
    if not isinstance(exc, OSError) or isinstance(exc, BrokenPipeError):
        return None
    name = _filename(exc)
    code = exc.errno
    paths = user_paths(args)
    if code == errno.EROFS:
        where = f"folder {_folder(name, paths)}" if name else "the output folder"
        return (
            f"{where} is on a read-only file system, nothing can be written there: choose "
            "another output"
        )
    if code in NOT_WRITABLE and name:
        typed = _typed_path_of(name, paths)
        shown = name
        if typed:  # the user's path, not the hidden temporary it is assembled in
            first = os.path.relpath(os.path.abspath(name), os.path.dirname(_abs(typed)))
            first = first.split(os.sep)[0]
            if first.startswith(".") and first not in (".", ".."):
                shown = typed
        return (
            f"permission denied for {shown}: the folder {_folder(name, paths)} is read-only or not "
            "writable (or the file not readable): choose another output, or fix the permissions"
        )
    if code in NO_SPACE:
        where = (
            f"the device holding {_folder(name, paths)}" if name else "the device being written to"
        )
        quota = " (or the disk quota is used up)" if code == errno.EDQUOT else ""
        return f"no space left on {where}{quota}: free some space or choose another output"
    if code == errno.ENAMETOOLONG:
        # always the path's fault (a typed one, or one in a spec or project file), never ours
        shown = _typed_path_of(name, paths) if name else None
        shown = shown or name or "a path"
        if len(shown) > 120:
            shown = f"{shown[:60]}...{shown[-50:]} ({len(shown)} characters)"
        return (
            f"{shown}: a name in this path is too long for the file system (at most 255 bytes "
            "per name and 4096 per path; an output's hidden temporary adds about 20): choose a "
            "shorter path"
        )
    if code in BAD_PATH and name and _typed_path_of(name, paths, siblings=False):
        what = {
            errno.ENOENT: "does not exist",
            errno.ENOTDIR: "has a file where a folder is needed",
            errno.EISDIR: "is a folder where a file is needed",
        }[code]
        return f"{name} {what}: check the path"
    return None


def stdout_is_gone() -> bool:
    """True when stdout is a pipe whose reader has exited (``... | head -1``)."""
    try:
        fd = sys.stdout.fileno()
        poller = select.poll()
        poller.register(fd, select.POLLOUT)
        return any(ev & (select.POLLERR | select.POLLHUP) for _, ev in poller.poll(0))
    except (OSError, ValueError, AttributeError):
        return False


def silence_stdout() -> None:
    """Point stdout at /dev/null so that Python's final flush does not fail a second time (the
    recipe of Python's signal docs, "Note on SIGPIPE")."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
