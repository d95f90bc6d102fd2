"""Commands users declare themselves: typed methods, call(), qga (subcommand and call)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from qga_libvirt import AgentTimeoutError, Arguments, Facts, GuestAgent, Model, command
from qga_libvirt import commands as commands_module
from qga_libvirt.commands import by_wire_name, known_wire_names, load_user_commands
from qga_libvirt.testing import FakeAgent, NoReply, Return

QGA = Path(__file__).resolve().parent.parent / ".venv" / "bin" / "qga"

VENDOR_MODULE = '''
"""A vendor agent's commands, as the README shows."""

from qga_libvirt import Arguments, Facts, GuestAgent, Model, command


class VendorStatus(Model):
    """What guest-vendor-status returns."""

    healthy: bool
    services: list[str] = []


class VendorAgent(GuestAgent):
    @command("guest-vendor-status", VendorStatus, Facts("1.0", platforms="Linux"))
    def vendor_status(verbose: bool = False) -> Arguments:
        """The vendor agent's health, and its services with verbose."""
        return {"verbose": verbose or None}

    @command("guest-vendor-restart", None, Facts("1.0", replies=False, changes_guest=True))
    def vendor_restart() -> Arguments:
        """Restart the vendor's service; no reply on success."""
        return None
'''


@pytest.fixture
def vendor(tmp_path: Path) -> Iterator[Path]:
    """The vendor module on sys.path, imported; its declarations removed afterwards."""
    (tmp_path / "vendor_qga.py").write_text(textwrap.dedent(VENDOR_MODULE))
    sys.path.insert(0, str(tmp_path))
    try:
        yield tmp_path
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("vendor_qga", None)
        for wire in ("guest-vendor-status", "guest-vendor-restart"):
            commands_module._USER_BY_WIRE.pop(wire, None)


def test_a_declared_command_is_a_typed_method_and_known_to_call(vendor: Path) -> None:
    declared = load_user_commands("vendor_qga")
    assert [c.wire for c in declared] == ["guest-vendor-status", "guest-vendor-restart"]
    import vendor_qga  # type: ignore[import-not-found]

    status = by_wire_name("guest-vendor-status")
    assert status is not None
    assert status.facts.platforms == "Linux"
    assert "guest-vendor-restart" in known_wire_names()
    with FakeAgent() as fake:
        fake.script("guest-vendor-status", Return({"healthy": True, "services": ["a"], "x": 1}))
        fake.script("guest-vendor-restart", NoReply(), times=2)
        with vendor_qga.VendorAgent.from_socket(fake.path, timeout=1) as agent:
            result = agent.vendor_status(verbose=True)
            assert result.healthy
            assert result.services == ["a"]
            assert fake.requests[-1]["arguments"] == {"verbose": True}
            start = time.monotonic()
            assert agent.vendor_restart() is None  # declared: no reply awaited
            assert agent.call("guest-vendor-restart") is None
            assert time.monotonic() - start < 1


def test_an_undeclared_no_reply_command_is_waited_for() -> None:
    with FakeAgent() as fake, GuestAgent.from_socket(fake.path, timeout=0.3) as agent:
        fake.script("guest-vendor-restart", NoReply())
        with pytest.raises(AgentTimeoutError):
            agent.call("guest-vendor-restart")


def test_a_builtin_name_cannot_be_declared_again() -> None:
    with pytest.raises((ValueError, RuntimeError)) as caught:

        class Again(GuestAgent):
            @command("guest-get-osinfo", Model, Facts("1.0"))
            def mine() -> Arguments:
                return None

    error: BaseException | None = caught.value
    if isinstance(error, RuntimeError):  # Python 3.11 wraps errors from __set_name__
        error = error.__cause__
    assert "guest-get-osinfo is already declared as Commands.get_osinfo" in str(error)


def test_a_module_that_cannot_be_imported_is_named() -> None:
    with pytest.raises(ImportError, match="QGA_COMMANDS names no_such_vendor_module"):
        load_user_commands("no_such_vendor_module")


def qga(*args: str | Path, vendor: Path | None) -> subprocess.CompletedProcess[bytes]:
    env = {k: v for k, v in os.environ.items() if k not in ("QGA_COMMANDS", "PYTHONPATH")}
    if vendor is not None:
        env |= {"QGA_COMMANDS": "vendor_qga", "PYTHONPATH": str(vendor)}
    return subprocess.run(
        [str(QGA), *map(str, args)], capture_output=True, timeout=60, check=False, env=env
    )


def test_qga_knows_declared_commands(vendor: Path) -> None:
    with FakeAgent() as fake:
        fake.script("guest-vendor-status", Return({"healthy": True}), times=None)
        fake.script("guest-vendor-restart", NoReply(), times=None)
        sub = qga("--socket", fake.path, "vendor-status", "--verbose", "--json", vendor=vendor)
        assert sub.returncode == 0, sub.stderr
        assert b'"healthy": true' in sub.stdout
        restart = qga(
            "--socket", fake.path, "--timeout", "1", "call", "guest-vendor-restart", vendor=vendor
        )
        assert restart.returncode == 0, restart.stderr
        unknown = qga("--socket", fake.path, "vendor-status", vendor=None)
        assert unknown.returncode == 2
        waited = qga(
            "--socket", fake.path, "--timeout", "1", "call", "guest-vendor-restart", vendor=None
        )
        assert waited.returncode == 6  # not declared: a reply is awaited, and times out
    broken = qga("--socket", fake.path, "ping", vendor=Path("/nonexistent"))
    assert broken.returncode == 2
    assert b"QGA_COMMANDS names vendor_qga" in broken.stderr


@pytest.mark.anyio
async def test_the_mcp_raw_tool_knows_declared_commands(vendor: Path) -> None:
    from mcp import Client

    from mcp_server import Config, Group, build_server

    load_user_commands("vendor_qga")
    with FakeAgent() as fake:
        fake.script("guest-vendor-restart", NoReply(), times=None)
        config = Config(socket=[f"vm={fake.path}"], enable=[Group.RAW], confirm_destructive="never")
        async with Client(build_server(config)) as client:
            arguments = {"domain": "vm", "command": "guest-vendor-restart"}
            start = time.monotonic()
            result = await client.call_tool("agent_command", arguments)
            assert not result.is_error
            assert result.structured_content is not None
            assert result.structured_content.get("result") is None  # nulls are left out
            assert time.monotonic() - start < 1  # declared: no reply awaited
            commands_module._USER_BY_WIRE.pop("guest-vendor-restart")
            undeclared = await client.call_tool("agent_command", arguments)
            assert undeclared.is_error  # a reply is awaited, and never comes
