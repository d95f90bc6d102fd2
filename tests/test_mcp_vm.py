"""The installed ``qga-mcp`` over stdio, against libvirt and the tiny guests (the lab)."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TextIO

import anyio
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client

from mcp_server.tools import catalogue
from qga_libvirt import GuestAgent
from qga_libvirt.models import FsfreezeStatus

from .lab import LOCAL_URI, TCP_URI, Lab
from .test_mcp_server import structured as data
from .test_mcp_server import text

pytestmark = [pytest.mark.vm, pytest.mark.anyio]

QGA_MCP = str(Path(sys.executable).parent / "qga-mcp")
SHELL = ("--allow-exec", "/bin/sh", "--allow-exec", "/bin/true", "--allow-exec-launchers")


@asynccontextmanager
async def stdio(*args: str, errlog: TextIO | None = None) -> AsyncIterator[Client]:
    """A client of ``qga-mcp --connect qemu:///system ARGS`` launched over stdio."""
    confirm = () if "--confirm-destructive" in args else ("--confirm-destructive", "never")
    params = StdioServerParameters(command=QGA_MCP, args=["--connect", LOCAL_URI, *confirm, *args])
    async with Client(stdio_client(params, errlog=errlog or sys.stderr)) as client:
        yield client


async def test_stdio_default_lists_only_read_only_tools_annotated_with_schemas(lab: Lab) -> None:
    async with stdio() as client:
        tools = (await client.list_tools()).tools
    assert [t.name for t in tools] == [spec.name for spec in catalogue([])]
    for listed in tools:
        assert listed.annotations is not None, listed.name
        assert listed.annotations.read_only_hint is True, listed.name
        assert listed.annotations.destructive_hint is False, listed.name
        assert listed.annotations.idempotent_hint is not None, listed.name
        assert listed.annotations.open_world_hint is not None, listed.name
        assert listed.output_schema is not None, listed.name
        assert listed.output_schema["type"] == "object", listed.name


async def test_get_osinfo_on_a_tiny_guest_and_the_domain_list(lab: Lab) -> None:
    async with stdio() as client:
        osinfo = await client.call_tool("get_osinfo", {"domain": lab.ok})
        listed = data(await client.call_tool("list_domains", {}))
    info = data(osinfo)
    assert info["domain"] == lab.ok
    assert Path("/lib/modules", info["result"]["kernel-release"]).is_dir()  # a host kernel
    assert "<guest-data-" in text(osinfo)
    by_name = {d["domain"]: d for d in listed["domains"]}
    assert by_name[lab.ok]["agent_channel"] == "connected"
    assert by_name[lab.ok]["state"] == "running"
    assert by_name[lab.none]["agent_channel"] == "none"
    assert by_name[lab.sock]["agent_channel"] == "raw socket"
    assert by_name[lab.off]["state"] == "shut off"
    assert listed["hypervisors"] == [{"name": "default", "uri": LOCAL_URI}]


async def test_exec_on_the_allowed_domain_only(lab: Lab) -> None:
    async with stdio("--allow-domain", lab.ok, "--enable", "exec", *SHELL) as client:
        names = {t.name for t in (await client.list_tools()).tools}
        ran = await client.call_tool(
            "run_command",
            {"domain": lab.ok, "argv": ["/bin/sh", "-c", "echo hi from $(uname -m); exit 4"]},
        )
        other = await client.call_tool("run_command", {"domain": lab.sock, "argv": ["/bin/true"]})
        listed = data(await client.call_tool("list_domains", {}))
    assert {"run_command", "command_status"} <= names
    result = data(ran)
    assert result["stdout"] == f"hi from {os.uname().machine}\n"
    assert result["exitcode"] == 4
    assert other.is_error
    assert f"domain '{lab.sock}' does not exist or is not one this server may touch" in text(other)
    assert [d["domain"] for d in listed["domains"]] == [lab.ok]


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("none", "has no guest agent channel, so no tool can reach inside it; the operator"),
        ("off", "is shut off: this server cannot start or resume a domain; ask the operator"),
        ("never", "is not connected: qemu-guest-agent is not running in the guest"),
        ("missing", "does not exist or is not one this server may touch"),
    ],
)
async def test_errors_are_results_with_what_to_do(lab: Lab, kind: str, message: str) -> None:
    domain = getattr(lab, kind) if kind != "missing" else "qga-mcp-no-such-domain"
    async with stdio() as client:
        result = await client.call_tool("get_hostname", {"domain": domain})
    assert result.is_error
    assert message in text(result)
    assert "Traceback" not in text(result)


async def test_password_stays_out_of_the_audit_log(lab: Lab) -> None:
    secret = "Corr3ct-Horse-" + str(os.getpid())
    with tempfile.TemporaryFile("w+") as log:  # a real file: the child writes to its fd
        async with stdio("--enable", "credentials", errlog=log) as client:
            await client.call_tool(
                "set_user_password",
                {"domain": lab.ok, "username": "qga-mcp-no-such-user", "password": secret},
            )
        log.seek(0)
        stderr = log.read()
    assert re.search(rf'tool=set_user_password domain="{lab.ok}" outcome=\S+', stderr)
    assert secret not in stderr


async def test_read_file_of_a_proc_file(lab: Lab) -> None:
    args = ("--enable", "files-read", "--read-path", "/proc/version")
    async with stdio(*args) as client:
        version = data(
            await client.call_tool("read_file", {"domain": lab.ok, "path": "/proc/version"})
        )
        refused = await client.call_tool("read_file", {"domain": lab.ok, "path": "/proc/cmdline"})
    assert version["content"].startswith("Linux version ")
    assert version["eof"]
    assert refused.is_error


async def test_freeze_is_thawed_by_the_server_when_its_window_ends(lab: Lab) -> None:
    async with stdio("--enable", "freeze", "--max-freeze-seconds", "3") as client:
        frozen = data(await client.call_tool("fsfreeze_freeze", {"domain": lab.ok}))
        during = data(await client.call_tool("fsfreeze_status", {"domain": lab.ok}))
        too_long = await client.call_tool(
            "fsfreeze_freeze", {"domain": lab.ok, "thaw_within_s": 60}
        )
        await anyio.sleep(4.5)
        after = data(await client.call_tool("fsfreeze_status", {"domain": lab.ok}))
        data(await client.call_tool("fsfreeze_freeze", {"domain": lab.ok, "thaw_within_s": 2}))
        data(await client.call_tool("fsfreeze_thaw", {"domain": lab.ok}))
        thawed = data(await client.call_tool("fsfreeze_status", {"domain": lab.ok}))
    assert frozen["frozen"] >= 1
    assert frozen["thaw_within_s"] == 3
    assert during["result"] == "frozen"
    assert too_long.is_error
    assert "over this server's cap of 3 s" in text(too_long)
    assert after["result"] == "thawed"
    assert thawed["result"] == "thawed"


async def test_several_hypervisors_address_domains_by_name(lab: Lab) -> None:
    params = StdioServerParameters(
        command=QGA_MCP, args=["--connect", f"a={LOCAL_URI}", "--connect", f"b={TCP_URI}"]
    )
    async with Client(stdio_client(params)) as client:
        listed = data(await client.call_tool("list_domains", {}))
        over_tcp = await client.call_tool("get_hostname", {"domain": f"b/{lab.ok}"})
        bare = await client.call_tool("get_hostname", {"domain": lab.ok})
        unknown = await client.call_tool("get_hostname", {"domain": f"c/{lab.ok}"})
    addresses = {d["domain"] for d in listed["domains"]}
    assert {f"a/{lab.ok}", f"b/{lab.ok}"} <= addresses
    assert data(over_tcp)["domain"] == f"b/{lab.ok}"
    assert bare.is_error
    assert f"address the domain as HYPERVISOR/{lab.ok}" in text(bare)
    assert unknown.is_error
    assert "no hypervisor is named 'c'" in text(unknown)


# --- attacks on a real tiny guest -----------------------------------------------------------


ORPHANED_CAPTURES = (
    'for f in /tmp/qga-run/*; do [ -e "$f" ] || continue; p=${f##*/}; p=${p%.*}; '
    '[ -d /proc/$p ] || echo "$f"; done'
)
"""Capture files in the guest whose process is gone (a running one's, the listing's own
included, are not leftovers)."""


def guest(lab: Lab) -> GuestAgent:
    return GuestAgent.from_domain(lab.domain(lab.ok), timeout=30)


async def test_no_oracle_for_refused_domains_by_name_uuid_or_id(lab: Lab) -> None:
    dom = lab.domain(lab.sock)
    async with stdio("--allow-domain", lab.ok) as client:
        answers = {
            key: await client.call_tool("get_hostname", {"domain": key})
            for key in (lab.sock, dom.UUIDString(), str(dom.ID()), "qga-mcp-no-such-domain")
        }
    for key, result in answers.items():
        assert result.is_error, key
        assert text(result) == (
            f"domain '{key}' does not exist or is not one this server may touch; use "
            "list_domains to see the allowed ones, or ask the operator to add it with "
            "--allow-domain"
        )
        if key != lab.sock:
            assert lab.sock not in text(result)


async def test_a_guest_symlink_cannot_lead_read_or_list_out_of_the_allowed_dir(lab: Lab) -> None:
    with guest(lab) as agent:
        agent.run_shell("rm -rf /tmp/mcp-allowed; mkdir -p /tmp/mcp-allowed && "
                        "echo fine > /tmp/mcp-allowed/ok && ln -s / /tmp/mcp-allowed/root && "
                        "ln -s /etc/passwd /tmp/mcp-allowed/pw", check=True)  # fmt: skip
    args = ("--enable", "files-read", "--read-path", "/tmp/mcp-allowed")
    async with stdio(*args) as client:
        through = await client.call_tool(
            "read_file", {"domain": lab.ok, "path": "/tmp/mcp-allowed/root/etc/passwd"}
        )
        link = await client.call_tool(
            "read_file", {"domain": lab.ok, "path": "/tmp/mcp-allowed/pw"}
        )
        listed = await client.call_tool(
            "list_dir", {"domain": lab.ok, "path": "/tmp/mcp-allowed/root"}
        )
        ok = await client.call_tool("read_file", {"domain": lab.ok, "path": "/tmp/mcp-allowed/ok"})
        own = await client.call_tool("list_dir", {"domain": lab.ok, "path": "/tmp/mcp-allowed"})
    for result in (through, link, listed):
        assert result.is_error
        assert "outside the allowed paths: refused" in text(result)
    assert data(ok)["content"] == "fine\n"
    names = {e["name"]: e["type"] for e in data(own)["entries"]}
    assert names == {"ok": "file", "root": "link", "pw": "link"}


async def test_exec_allow_list_holds_on_a_busybox_guest(lab: Lab) -> None:
    # On busybox every /bin program is a link to /bin/busybox: allowing /bin/echo must
    # not allow busybox itself, nor a shell through it.
    args = ("--enable", "exec", "--allow-exec", "/bin/echo", "--allow-exec", "/bin/uname -r")
    async with stdio(*args) as client:
        echo = await client.call_tool(
            "run_command", {"domain": lab.ok, "argv": ["/bin/echo", "hi"]}
        )
        refused = [
            await client.call_tool("run_command", {"domain": lab.ok, "argv": argv})
            for argv in (
                ["/bin/busybox", "sh", "-c", "id"],
                ["/bin/sh", "-c", "id"],
                ["/bin/uname", "-a"],
                ["/bin/../bin/sh"],
                ["echo", "hi"],
            )
        ]
        uname = await client.call_tool(
            "run_command", {"domain": lab.ok, "argv": ["/bin/uname", "-r"]}
        )
    assert data(echo)["stdout"] == "hi\n"
    assert data(uname)["exitcode"] == 0
    for result in refused:
        assert result.is_error
        assert "may not be run" in text(result)


async def test_cancelling_run_command_kills_the_guest_process_and_its_files(lab: Lab) -> None:
    with guest(lab) as agent:
        before = set(agent.run_shell(ORPHANED_CAPTURES).stdout.split())
    args = ("--enable", "exec", "--allow-exec", "/bin/sleep")
    async with stdio(*args) as client:
        with anyio.move_on_after(4):
            await client.call_tool(
                "run_command", {"domain": lab.ok, "argv": ["/bin/sleep", "67"], "timeout_s": 60}
            )
        await anyio.sleep(3)  # a poll or two of the abandoned wait
    with guest(lab) as agent:
        ps = agent.run(["/bin/ps"]).stdout.decode()
        after = set(agent.run_shell(ORPHANED_CAPTURES).stdout.split())
    assert "sleep 67" not in ps
    assert after <= before, f"capture files left behind: {after - before}"


async def test_sigkill_of_the_server_while_frozen_leaves_the_guest_thawed(lab: Lab) -> None:
    marker = "--max-freeze-seconds=59.75"
    async with stdio("--enable", "freeze", marker) as client:
        frozen = data(await client.call_tool("fsfreeze_freeze", {"domain": lab.ok}))
        found = subprocess.run(
            ["pgrep", "-f", f"qga-mcp .*{marker}"], capture_output=True, text=True
        )
        pids = [int(p) for p in found.stdout.split()]
        assert len(pids) == 1, found
        os.kill(pids[0], signal.SIGKILL)
        with contextlib.suppress(Exception):
            await client.call_tool("fsfreeze_status", {"domain": lab.ok})
    assert frozen["frozen"] >= 1
    with guest(lab) as agent:
        started = time.monotonic()
        while agent.fsfreeze_status() != FsfreezeStatus.THAWED:
            if time.monotonic() - started > 40:
                agent.fsfreeze_thaw()
                pytest.fail("the guest stayed frozen after the server was killed")
            time.sleep(0.5)
        agent.ping()


async def test_wait_for_agent_answers_at_once_when_it_is_up(lab: Lab) -> None:
    async with stdio() as client:
        ready = data(await client.call_tool("wait_for_agent", {"domain": lab.ok, "timeout_s": 30}))
        never = await client.call_tool("wait_for_agent", {"domain": lab.never, "timeout_s": 2})
    assert ready["waited_s"] < 30
    assert never.is_error
