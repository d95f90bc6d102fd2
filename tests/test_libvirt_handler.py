"""Importing and using qga_libvirt changes nothing process-wide: libvirt's error handler
stays the application's. libvirt's test driver (``test:///default``, in-process, no
daemon) raises real libvirt errors; each check runs in a fresh interpreter."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

QGA = Path(sys.executable).with_name("qga")

APPLICATION = """
import libvirt

seen = []
libvirt.registerErrorHandler(lambda ctx, error: seen.append((ctx, error[0])), "app")

import mcp_server
import qga_libvirt
from qga_libvirt import DomainNotFoundError, GuestAgent, list_domains
from qga_libvirt import cli

assert [d.name for d in list_domains("test:///default")] == ["test"]
try:
    GuestAgent.from_domain("nosuch", "test:///default")
except DomainNotFoundError:
    pass
else:
    raise SystemExit("no DomainNotFoundError")
print(seen)
"""


def python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )


def test_an_applications_error_handler_survives_importing_and_using_the_library() -> None:
    result = python(APPLICATION)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[('app', 42)]"  # VIR_ERR_NO_DOMAIN, to the app's handler
    assert result.stderr == ""


def test_without_a_handler_libvirt_keeps_its_own_default() -> None:
    """The library leaves libvirt's default (printing) alone; the error is typed anyway."""
    result = python(
        "from qga_libvirt import DomainNotFoundError, GuestAgent\n"
        "try:\n"
        "    GuestAgent.from_domain('nosuch', 'test:///default')\n"
        "except DomainNotFoundError as error:\n"
        "    print(error.target)\n"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "domain 'nosuch'"
    assert "libvirt: " in result.stderr  # libvirt's default handler, not ours


def test_qga_owns_its_process_and_says_one_line() -> None:
    result = subprocess.run(
        [str(QGA), "-c", "test:///default", "nosuch", "ping"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 5
    assert result.stderr.splitlines() == [result.stderr.strip()]
    assert result.stderr.startswith("qga: error: domain 'nosuch' not found")
