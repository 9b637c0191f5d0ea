"""Headless Qt with OpenGL: start a private Xvfb when there is no display.

napari draws with OpenGL; Qt's ``offscreen`` platform has no GL context on most Linux servers, so
screenshots and canvas tests need an X server. This gives tests, CI and ``demo --screenshot`` one
on a machine without a display, stopping it by pid when the process exits.
"""

from __future__ import annotations

import atexit
import os
import select
import shutil
import subprocess
import sys


def ensure_display(size: str = "1920x1200x24", timeout: float = 10.0) -> str:
    """Make sure Qt can open a GL window; return how: "display", "xvfb" or "offscreen"."""
    if os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY") or sys.platform != "linux":
        return "display"
    if os.environ.get("QT_QPA_PLATFORM") == "offscreen":
        return "offscreen"  # asked for explicitly
    xvfb = shutil.which("Xvfb")
    if xvfb is None:
        os.environ["QT_QPA_PLATFORM"] = "offscreen"
        return "offscreen"
    read_fd, write_fd = os.pipe()
    argv = [xvfb, "-displayfd", str(write_fd), "-screen", "0", size, "-nolisten", "tcp"]
    proc = subprocess.Popen(
        argv,
        pass_fds=(write_fd,),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=_die_with_parent,
    )
    os.close(write_fd)
    number = b""
    try:
        while not number.endswith(b"\n"):
            ready, _, _ = select.select([read_fd], [], [], timeout)
            chunk = os.read(read_fd, 16) if ready else b""
            if not chunk:
                break
            number += chunk
    finally:
        os.close(read_fd)
    if not number.strip().isdigit():
        proc.terminate()
        os.environ["QT_QPA_PLATFORM"] = "offscreen"
        return "offscreen"
    os.environ["DISPLAY"] = f":{number.strip().decode()}"
    os.environ.pop("QT_QPA_PLATFORM", None)
    atexit.register(_stop, proc)
    return "xvfb"


def _die_with_parent() -> None:
    """In the child: ask Linux to end Xvfb if this process is killed (atexit would not run)."""
    import contextlib
    import ctypes
    import signal

    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
