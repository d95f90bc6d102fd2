"""qga-mcp over streamable HTTP: a call through it, Host/Origin checks, the bearer token."""

from __future__ import annotations

import http.client
import json
import os
import re
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from qga_libvirt.testing import HostAgent

pytestmark = pytest.mark.agent

QGA_MCP = str(Path(sys.executable).parent / "qga-mcp")
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "test", "version": "0"},
    },
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Served:
    """A running ``qga-mcp --http``: its port, its bearer token, its token file."""

    port: int
    token: str
    token_file: Path | None = None


def _wait_listening(process: subprocess.Popen[bytes], connect: Callable[[], None]) -> None:
    deadline = time.monotonic() + 20
    while True:
        try:
            connect()
            return
        except OSError:
            assert process.poll() is None, process.communicate()[1].decode()
            assert time.monotonic() < deadline, "qga-mcp did not start listening"
            time.sleep(0.05)


@contextmanager
def http_server(
    host_agent: HostAgent, *args: str, token: str | None = None, runtime_dir: Path | None = None
) -> Iterator[Served]:
    """``qga-mcp --http 127.0.0.1:PORT`` for the host agent, with ``token`` (or the one
    it generates when None)."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "QGA_MCP_TOKEN"}
    if token is not None:
        env["QGA_MCP_TOKEN"] = token
    if runtime_dir is not None:
        env["XDG_RUNTIME_DIR"] = str(runtime_dir)
    command = [QGA_MCP, "--http", f"127.0.0.1:{port}", "--socket", f"host={host_agent.socket}"]
    process = subprocess.Popen([*command, *args], env=env, stderr=subprocess.PIPE)
    try:
        served = Served(port, token or "")
        if token is None:
            assert process.stderr is not None
            line = process.stderr.readline().decode()
            found = re.search(r"generated one into (\S+) \(mode 0600\).*Bearer (\S+)'", line)
            assert found, line
            served = Served(port, found[2], Path(found[1]))
        _wait_listening(process, lambda: socket.create_connection(("127.0.0.1", port), 1).close())
        yield served
    finally:
        process.terminate()
        process.communicate(timeout=10)


def post(served: Served | int, headers: dict[str, str], *, auth: bool = True) -> int:
    """POST an initialize request with ``headers`` (and the token); the HTTP status."""
    port = served.port if isinstance(served, Served) else served
    if auth and isinstance(served, Served):
        headers = {"Authorization": f"Bearer {served.token}", **headers}
    return _post(port, headers)[0]


def _post(port: int, headers: dict[str, str]) -> tuple[int, dict[str, str]]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request(
            "POST",
            "/mcp",
            body=json.dumps(INITIALIZE),
            headers={
                "Content-Type": "application/json",
                "Accept": "application/json, text/event-stream",
                **headers,
            },
        )
        response = connection.getresponse()
        return response.status, dict(response.getheaders())
    finally:
        connection.close()


@pytest.mark.anyio
async def test_a_call_through_streamable_http(host_agent: HostAgent) -> None:
    with http_server(host_agent, token="t" * 32) as served:
        headers = {"Authorization": f"Bearer {served.token}"}
        url = f"http://127.0.0.1:{served.port}/mcp"
        async with (
            httpx2.AsyncClient(headers=headers) as http,
            Client(streamable_http_client(url, http_client=http)) as client,
        ):
            tools = {t.name for t in (await client.list_tools()).tools}
            result = await client.call_tool("get_hostname", {"domain": "host"})
    assert "run_command" not in tools
    assert not result.is_error
    assert result.structured_content == {"domain": "host", "result": socket.gethostname()}


def test_wrong_origin_and_host_are_refused(host_agent: HostAgent) -> None:
    with http_server(host_agent, token="t" * 32) as port:
        assert post(port, {"Origin": f"http://localhost:{port.port}"}) == 200
        assert post(port, {"Origin": "http://evil.example"}) == 403
        assert post(port, {"Origin": f"http://evil.example:{port.port}"}) == 403
        assert post(port, {"Host": f"evil.example:{port.port}"}) == 421


def test_extra_origin_can_be_allowed(host_agent: HostAgent) -> None:
    with http_server(host_agent, "--allow-origin", "https://ui.example", token="t" * 32) as port:
        assert post(port, {"Origin": "https://ui.example"}) == 200
        assert post(port, {"Origin": "https://other.example"}) == 403


@pytest.mark.anyio
async def test_bearer_token_is_required_and_401_says_bearer(host_agent: HostAgent) -> None:
    token = "t0ken-" + "x" * 20
    with http_server(host_agent, token=token) as served:
        missing = _post(served.port, {})
        wrong = _post(served.port, {"Authorization": "Bearer wrong"})
        assert post(served, {"Authorization": "Basic dDB rZW4="}, auth=False) == 401
        assert post(served, {"Authorization": f"bearer {token}"}, auth=False) == 200
        headers = {"Authorization": f"Bearer {token}"}
        url = f"http://127.0.0.1:{served.port}/mcp"
        async with (
            httpx2.AsyncClient(headers=headers) as http,
            Client(streamable_http_client(url, http_client=http)) as c,
        ):
            assert not (await c.call_tool("get_hostname", {"domain": "host"})).is_error
    assert missing[0] == wrong[0] == 401
    assert missing[1]["www-authenticate"] == 'Bearer realm="qga-mcp"'
    assert wrong[1]["www-authenticate"] == 'Bearer realm="qga-mcp", error="invalid_token"'


def test_http_without_a_token_generates_one_only_this_user_can_read(
    host_agent: HostAgent, tmp_path: Path
) -> None:
    with http_server(host_agent, runtime_dir=tmp_path) as served:
        assert served.token_file is not None
        assert served.token_file.parent == tmp_path
        assert stat.S_IMODE(served.token_file.stat().st_mode) == 0o600
        assert served.token_file.read_text().strip() == served.token
        assert len(served.token) >= 40
        assert post(served, {}, auth=False) == 401
        assert post(served, {}) == 200
        # Another local user has neither the token nor the file.
        other = _as_nobody(
            f"import http.client, json\n"
            f"c = http.client.HTTPConnection('127.0.0.1', {served.port}, timeout=10)\n"
            f"c.request('POST', '/mcp', body={json.dumps(json.dumps(INITIALIZE))}, headers="
            "{'Content-Type': 'application/json',"
            " 'Accept': 'application/json, text/event-stream'})\n"
            "print(c.getresponse().status)\n"
            f"try:\n    open({str(served.token_file)!r}).read()\n    print('read')\n"
            "except PermissionError:\n    print('denied')\n"
        )
    assert other.split() == ["401", "denied"]


def _as_nobody(program: str) -> str:
    """Run ``program`` with the system's python as the user nobody; its stdout."""
    done = subprocess.run(
        ["runuser", "-u", "nobody", "--", "/usr/bin/python3", "-c", program],
        capture_output=True,
        text=True,
        timeout=60,
        cwd="/",
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.anyio
async def test_unix_socket_is_for_this_user_only(host_agent: HostAgent, tmp_path: Path) -> None:
    os.chmod(tmp_path, 0o755)  # nobody may reach the directory: only the socket's mode stops it
    path = tmp_path / "mcp.sock"
    env = {k: v for k, v in os.environ.items() if k != "QGA_MCP_TOKEN"}
    command = [QGA_MCP, "--unix", str(path), "--socket", f"host={host_agent.socket}"]
    process = subprocess.Popen(command, env=env, stderr=subprocess.PIPE)
    try:

        def connect() -> None:
            with socket.socket(socket.AF_UNIX) as sock:
                sock.connect(str(path))

        _wait_listening(process, connect)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        transport = httpx2.AsyncHTTPTransport(uds=str(path))
        async with (
            httpx2.AsyncClient(transport=transport) as http,
            Client(streamable_http_client("http://localhost/mcp", http_client=http)) as client,
        ):
            result = await client.call_tool("get_hostname", {"domain": "host"})
        other = _as_nobody(
            "import socket\n"
            "s = socket.socket(socket.AF_UNIX)\n"
            f"try:\n    s.connect({str(path)!r})\n    print('connected')\n"
            "except PermissionError:\n    print('denied')\n"
        )
    finally:
        process.terminate()
        process.communicate(timeout=10)
    assert not result.is_error
    assert other.strip() == "denied"


@pytest.mark.parametrize("bind", ["0.0.0.0:8765", "192.0.2.7:8765", "myhost.example:8765"])
def test_non_loopback_bind_without_token_is_refused_at_start(bind: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "QGA_MCP_TOKEN"}
    done = subprocess.run(
        [QGA_MCP, "--http", bind, "--socket", "x=/nonexistent"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2
    assert "without a bearer token" in done.stderr


def test_wildcard_bind_needs_the_host_clients_use() -> None:
    env = {**os.environ, "QGA_MCP_TOKEN": "x" * 32}
    done = subprocess.run(
        [QGA_MCP, "--http", "0.0.0.0:8765", "--socket", "x=/nonexistent"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2
    assert "--allow-host" in done.stderr


@pytest.mark.anyio
async def test_an_exec_handle_is_no_handle_for_another_http_session(host_agent: HostAgent) -> None:
    token = "t" * 32
    args = ("--enable", "exec", "--allow-exec", "/bin/sleep", "--confirm-destructive", "never")
    with http_server(host_agent, *args, token=token) as served:
        url = f"http://127.0.0.1:{served.port}/mcp"
        headers = {"Authorization": f"Bearer {token}"}
        async with (
            httpx2.AsyncClient(headers=headers) as http_a,
            httpx2.AsyncClient(headers=headers) as http_b,
            Client(streamable_http_client(url, http_client=http_a), mode="legacy") as first,
            Client(streamable_http_client(url, http_client=http_b), mode="legacy") as second,
        ):
            started = await first.call_tool(
                "run_command", {"domain": "host", "argv": ["/bin/sleep", "4"], "timeout_s": 1}
            )
            assert started.structured_content is not None
            handle = started.structured_content["handle"]
            stolen = await second.call_tool("cancel_command", {"domain": "host", "handle": handle})
            mine = await first.call_tool("cancel_command", {"domain": "host", "handle": handle})
    assert stolen.is_error
    assert "no such handle" in str(stolen.content)
    assert not mine.is_error, mine.content
