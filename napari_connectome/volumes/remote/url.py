"""``ssh://`` SOURCE strings: a zarr store on a cluster, reached through a saved cluster profile
or an SSH address whose host key ``known_hosts`` already holds.

```
ssh://PROFILE/abs/path/seg.ome.zarr[/inner/array]      a saved cluster profile (jobs/profiles.py)
ssh://[user@]host[:port]/abs/path/seg.ome.zarr         an address; its key must be in known_hosts
```

The part before the first ``/`` is a profile when it is exactly a saved profile's name (no ``@``,
no ``:``), else an address. The store root ends at the first path component ending in ``.zarr``
(the rest is the node inside it, as locally); a path without one is a store root by itself.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import TYPE_CHECKING
from urllib.parse import unquote

from napari_connectome.errors import UserInputError

if TYPE_CHECKING:
    from napari_connectome.jobs.spec import SSHSpec

SCHEME = "ssh://"
_HOST = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$|^\[[0-9A-Fa-f:.]+\]$")
_USER = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
_NOT_OVER_SSH = (".n5", ".h5", ".hdf5", ".hdf", ".tif", ".tiff")


@dataclass(frozen=True)
class RemoteLocation:
    """A zarr store on a cluster: how to log in, where its root is there, and the node inside."""

    ssh: SSHSpec
    root: str  # absolute POSIX path of the store root on the cluster
    inner: str = ""
    profile: str | None = None  # the saved profile it was reached through, if any
    text: str = ""  # the SOURCE as the user wrote it

    @property
    def address(self) -> str:
        user = f"{self.ssh.user}@" if self.ssh.user else ""
        return f"{user}{self.ssh.host}:{self.ssh.port}"

    @property
    def url(self) -> str:
        """The store root as an address URL (what names its cache folder)."""
        return f"{SCHEME}{self.address}{self.root}"

    @property
    def label(self) -> str:
        """How messages name the store: through the profile when there is one."""
        return f"{SCHEME}{self.profile}{self.root}" if self.profile else self.url

    def source(self, inner: str | None = None) -> str:
        """The SOURCE string of the store's root, or of ``inner`` inside it."""
        inner = self.inner if inner is None else inner
        return f"{self.label}/{inner.strip('/')}" if inner.strip("/") else self.label

    def cache_name(self) -> str:
        """A folder name for this store's cached chunks: the same login and root share it, a
        profile that now points elsewhere does not."""
        return hashlib.sha256(self.url.encode()).hexdigest()[:24]


def is_ssh_url(text: object) -> bool:
    return isinstance(text, str) and text[: len(SCHEME)].lower() == SCHEME


def _split_authority(authority: str, text: str) -> tuple[str | None, str, int]:
    user, _, hostport = authority.rpartition("@")
    if hostport.startswith("["):  # [::1]:2222
        host, _, rest = hostport.partition("]")
        host += "]"
        port = rest.removeprefix(":")
    else:
        host, _, port = hostport.partition(":")
    if not host or not _HOST.match(host) or (user and not _USER.match(user)):
        raise UserInputError(
            f"{text}: '{authority}' is neither a saved cluster profile nor an SSH address "
            "user@host:port; write ssh://PROFILE/abs/path or ssh://user@host:port/abs/path"
        )
    if port and not (port.isdigit() and 1 <= int(port) <= 65535):
        raise UserInputError(f"{text}: port {port!r} must be a number from 1 to 65535")
    return user or None, host.strip("[]"), int(port or 22)


def _split_path(path: str, text: str) -> tuple[str, str]:
    """(store root, inner node) of an absolute remote path; refuses what could leave it."""
    path = unquote(path)
    if not path.startswith("/"):
        raise UserInputError(
            f"{text}: give the absolute path on the cluster after the host or profile, e.g. "
            "ssh://cluster/scratch/me/seg.ome.zarr"
        )
    parts = [p for p in path.split("/") if p]
    bad = [p for p in parts if p in (".", "..") or "\x00" in p or "\\" in p or p == "~"]
    if bad or not parts:
        raise UserInputError(
            f"{text}: the path on the cluster must be absolute and plain (no '.', '..' or '~' "
            "parts)"
        )
    for p in parts:
        if p.lower().endswith(_NOT_OVER_SSH):
            raise UserInputError(
                f"{text}: only zarr and OME-Zarr stores are read over ssh:// ({p} is not one); "
                "convert it on the cluster (napari-connectome convert) or copy it here"
            )
    cut = next((i + 1 for i, p in enumerate(parts) if p.lower().endswith(".zarr")), len(parts))
    root = str(PurePosixPath("/", *parts[:cut]))
    return root, "/".join(parts[cut:])


def parse_ssh_url(text: str) -> RemoteLocation:
    """Parse (without connecting) an ``ssh://`` SOURCE; a profile's fields are read here."""
    from napari_connectome.jobs.spec import SSHSpec

    if not is_ssh_url(text):
        raise UserInputError(f"{text} is not an ssh:// source")
    rest = text[len(SCHEME) :]
    authority, slash, path = rest.partition("/")
    if not authority:
        raise UserInputError(
            f"{text}: name a saved cluster profile or an SSH address after ssh://, e.g. "
            "ssh://cluster/scratch/me/seg.ome.zarr"
        )
    root, inner = _split_path(slash + path, text)
    profile = _profile(authority)
    if profile is not None:
        ssh = profile.ssh()
        if ssh is None:
            raise UserInputError(
                f"{text}: cluster profile {profile.name!r} is this machine (no host); open the "
                f"path {root} directly"
            )
        return RemoteLocation(ssh, root, inner, profile=profile.name, text=text)
    user, host, port = _split_authority(authority, text)
    return RemoteLocation(SSHSpec(host=host, port=port, user=user), root, inner, text=text)


def location_for(ssh: SSHSpec | dict, path: str) -> RemoteLocation:
    """The location of ``path`` on the machine ``ssh`` logs in to (a job record's output)."""
    from napari_connectome.jobs.spec import SSHSpec

    spec = ssh if isinstance(ssh, SSHSpec) else SSHSpec.model_validate(ssh)
    root, inner = _split_path(path, path)
    loc = RemoteLocation(spec, root, inner)
    return RemoteLocation(spec, root, inner, text=loc.source())


def _profile(authority: str):
    """The saved cluster profile called ``authority``, if that is a profile name."""
    if "@" in authority or ":" in authority:
        return None
    from napari_connectome.jobs.profiles import list_profiles, load_profile

    return load_profile(authority) if authority in list_profiles() else None
