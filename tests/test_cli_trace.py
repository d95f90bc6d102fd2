"""qga --trace, QGA_TRACE=1 and --debug, on the real host agents."""

from __future__ import annotations

import base64
import os
import secrets
import subprocess
from pathlib import Path

import pytest

from qga_libvirt.testing import HostAgent

QGA = Path(__file__).resolve().parent.parent / ".venv" / "bin" / "qga"

pytestmark = pytest.mark.agent


def qga(*args: str | Path, stdin: bytes = b"", **env: str) -> subprocess.CompletedProcess[bytes]:
    environ = {k: v for k, v in os.environ.items() if k != "QGA_TRACE"} | env
    return subprocess.run(
        [str(QGA), *map(str, args)],
        input=stdin,
        capture_output=True,
        timeout=120,
        check=False,
        env=environ,
    )


def test_trace_shows_the_conversation(host_agent: HostAgent) -> None:
    sock = host_agent.socket
    quiet = qga("--socket", sock, "ping")
    assert quiet.returncode == 0
    assert quiet.stderr == b""
    for run in (
        qga("--socket", sock, "--trace", "get-host-name"),
        qga("--socket", sock, "get-host-name", "--trace"),
        qga("--socket", sock, "get-host-name", QGA_TRACE="1"),
    ):
        assert run.returncode == 0, run.stderr
        text = run.stderr.decode()
        assert f"qga: qga_libvirt.wire: -> socket {sock} guest-get-host-name\n" in text
        assert f"<- socket {sock} guest-get-host-name " in text
        assert " ms: return {" in text
        assert run.stdout  # the result still goes to stdout


def test_debug_after_the_command_turns_the_logs_on_too(host_agent: HostAgent) -> None:
    run = qga("--socket", host_agent.socket, "get-host-name", "--debug")
    assert run.returncode == 0
    assert b"qga_libvirt.wire: -> socket" in run.stderr


def test_the_trace_never_shows_the_password(host_agent: HostAgent) -> None:
    password = "pw-" + secrets.token_urlsafe(12)
    run = qga("--socket", host_agent.socket, "--trace", "passwd", "root", stdin=password.encode())
    assert run.returncode == 4  # blocked on the host agent, but sent: the trace shows it
    text = run.stderr.decode()
    assert "guest-set-user-password" in text
    assert '"password": "<secret>"' in text
    assert password not in text
    assert base64.b64encode(password.encode()).decode() not in text
