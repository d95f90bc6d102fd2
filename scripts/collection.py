"""This checkout's Ansible collection (``ansible/qga/libvirt``), installed as a user would
install it: for tests/test_ansible.py and bench/ansible.py."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Final

__all__ = ["COLLECTION_SRC", "install_collection"]

COLLECTION_SRC: Final = Path(__file__).resolve().parent.parent / "ansible" / "qga" / "libvirt"
GALAXY: Final = Path(sys.executable).with_name("ansible-galaxy")


def install_collection(home: Path) -> Path:
    """Build the collection in ``home`` (``ansible-galaxy collection build``) and install
    the tarball into ``home/collections``; returns that collections path.

    Raises:
        RuntimeError: ansible-galaxy failed (its output is in the message).
    """
    collections = home / "collections"
    _galaxy(home, "build", str(COLLECTION_SRC))
    (tarball,) = home.glob("qga-libvirt-*.tar.gz")
    _galaxy(home, "install", str(tarball), "-p", str(collections))
    return collections


def _galaxy(home: Path, *args: str) -> None:
    done = subprocess.run(
        [str(GALAXY), "collection", *args], cwd=home, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"ansible-galaxy collection {args[0]} failed (exit {done.returncode}): "
            f"{(done.stderr or done.stdout).strip()}"
        )
