"""``qga``: a command-line tool for the QEMU guest agent that feels like virsh.

The only part of qga-libvirt that prints or exits. See docs/cli.md, or ``qga --help``.
"""

from .app import main

__all__ = ["main"]
