"""Whether libvirt's errors may be printed: a switch for programs, free of libvirt.

libvirt prints every error it raises through ONE process-wide handler
(``libvirt.registerErrorHandler``), and cannot give that handler back. The library
therefore never replaces it by itself; a program that owns its process (``qga``,
``qga-mcp``) calls :func:`quiet_libvirt_errors`, and
:func:`~qga_libvirt.discovery.open_connection` silences libvirt from then on. This
module holds only the switch, so that a program can set it before (or without) loading
libvirt.
"""

from __future__ import annotations

import sys

__all__ = ["quiet_libvirt_errors", "silence", "wanted"]

_quiet = False


def quiet_libvirt_errors() -> None:
    """For a program that owns its process (``qga``, ``qga-mcp``): libvirt's errors are
    no longer printed on stderr (at once if libvirt is loaded, else from the first
    connection the library opens).
    The errors the library raises carry libvirt's words either way."""
    global _quiet
    _quiet = True
    libvirt = sys.modules.get("libvirt")
    if libvirt is not None:  # already loaded: from now on, not only from the next connection
        libvirt.registerErrorHandler(silence, None)


def silence(_ctx: object, _error: object) -> None:
    """libvirt's default handler prints every error to stderr; ours carry it instead."""


def wanted() -> bool:
    """Whether :func:`quiet_libvirt_errors` was called."""
    return _quiet
