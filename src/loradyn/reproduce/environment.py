"""The software environment of a reproduction (recorded in run.json and the report)."""

from __future__ import annotations

import platform
from importlib import metadata

PACKAGES = ("numpy", "scipy", "xarray", "matplotlib", "netCDF4", "rich", "typer", "torch", "timm",
            "peft")


def package_versions() -> dict[str, str]:
    """Versions of Python, loradyn and the main dependencies (``-`` when absent)."""
    out = {"python": platform.python_version(), "platform": platform.platform()}
    try:
        out["loradyn"] = metadata.version("loradyn")
    except metadata.PackageNotFoundError:
        from .. import __version__

        out["loradyn"] = __version__
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "-"
    return out
