"""What is known of this package as installed."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

__all__ = ["installed_version"]


def installed_version() -> str | None:
    """The installed version of qga-libvirt; None when it runs from a source tree that was
    never installed (each front end says that in its own words)."""
    try:
        return version("qga-libvirt")
    except PackageNotFoundError:
        return None
