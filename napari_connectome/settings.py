"""The user's settings file: ``settings.yaml`` in the config dir, beside the job registry.

Why a file and not options: a limit such as the size of the chunk cache belongs to the machine
and the user, not to one command; every entry point (GUI, CLI, notebook) must obey the same one.

```yaml
# ~/.config/napari-connectome/settings.yaml  ($NAPARI_CONNECTOME_CONFIG_DIR/settings.yaml)
cache_gb: 10        # most disk space the chunk cache of remote volumes may use
```
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from napari_connectome.errors import UserInputError

SETTINGS_FILE = "settings.yaml"
DEFAULT_CACHE_GB = 10.0
KNOWN = {
    "cache_gb": "most disk space (GB) the chunk cache of remote volumes may use",
    "user": "the name proofreading edits are logged under (default: your login name)",
}


def config_dir() -> Path:
    """``$NAPARI_CONNECTOME_CONFIG_DIR``, else the user config dir (profiles and jobs live here)."""
    base = os.environ.get("NAPARI_CONNECTOME_CONFIG_DIR")
    if base:
        return Path(base)
    import platformdirs

    return Path(platformdirs.user_config_dir("napari-connectome"))


def cache_dir() -> Path:
    """``$NAPARI_CONNECTOME_CACHE_DIR``, else the user cache dir (everything here can be fetched
    again, so it is never backed up or kept with the settings)."""
    base = os.environ.get("NAPARI_CONNECTOME_CACHE_DIR")
    if base:
        return Path(base)
    import platformdirs

    return Path(platformdirs.user_cache_dir("napari-connectome"))


def settings_path() -> Path:
    return config_dir() / SETTINGS_FILE


def read_settings() -> dict[str, Any]:
    """The settings file as a mapping ({} when there is none); an unknown key or a file that is
    not a YAML mapping is refused, so a typo never silently falls back to a default."""
    import yaml

    path = settings_path()
    if not path.is_file():
        return {}
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise UserInputError(
            f"settings file {path} cannot be read: {exc}; fix or delete it"
        ) from None
    if not isinstance(data, dict):
        raise UserInputError(f"settings file {path} must be a YAML mapping such as 'cache_gb: 10'")
    unknown = sorted(set(data) - set(KNOWN))
    if unknown:
        known = ", ".join(f"{k} ({v})" for k, v in KNOWN.items())
        raise UserInputError(
            f"settings file {path} has unknown setting(s) {', '.join(map(str, unknown))}; "
            f"known: {known}"
        )
    return data


def write_setting(name: str, value: Any) -> Path:
    """Set one setting (checked the way it is read), keeping the others."""
    import yaml

    if name not in KNOWN:
        raise UserInputError(f"unknown setting {name!r}; known: {', '.join(KNOWN)}")
    data = read_settings()
    data[name] = value
    _check(data)
    path = settings_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(yaml.safe_dump(data, sort_keys=True))
    os.replace(tmp, path)  # a reader never sees half a file
    return path


def _check(data: dict[str, Any]) -> None:
    if "cache_gb" in data:
        _cache_gb(data["cache_gb"])
    if "user" in data:
        _user(data["user"])


def _user(value: Any) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > 100:
        raise UserInputError(
            f"user in {settings_path()} must be a name (text of 1-100 characters), got {value!r}"
        )
    return value.strip()


def user_name() -> str | None:
    """The ``user`` setting (who proofreading edits are logged as), None when not set."""
    value = read_settings().get("user")
    return None if value is None else _user(value)


def _cache_gb(value: Any) -> float:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value <= 0:
        raise UserInputError(
            f"cache_gb in {settings_path()} must be a positive number of gigabytes (e.g. 10 or "
            f"0.5), got {value!r}"
        )
    return float(value)


def chunk_cache_limit_bytes() -> int:
    """Most bytes the chunk cache of remote volumes may hold (``cache_gb``, default 10 GB)."""
    gb = _cache_gb(read_settings().get("cache_gb", DEFAULT_CACHE_GB))
    return int(gb * 1e9)
