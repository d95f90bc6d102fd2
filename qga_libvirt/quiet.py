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

__all__ = ["quiet_libvirt_errors", "wanted"]

_quiet = False


def quiet_libvirt_errors() -> None:
    """For a program that owns its process (``qga``, ``qga-mcp``): from the next
    connection the library opens on, libvirt's errors are no longer printed on stderr.
    The errors the library raises carry libvirt's words either way."""
    global _quiet
    _quiet = True


def wanted() -> bool:
    """Whether :func:`quiet_libvirt_errors` was called."""
    return _quiet
