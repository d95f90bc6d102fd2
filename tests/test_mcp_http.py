"""qga-mcp over streamable HTTP: a call through it, Host/Origin checks, the bearer token."""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
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


@contextmanager
def http_server(host_agent: HostAgent, *args: str, token: str | None = None) -> Iterator[int]:
    """``qga-mcp --http 127.0.0.1:PORT`` for the host agent; yields the port."""
    port = free_port()
    env = {**os.environ, "QGA_MCP_TOKEN": token} if token else dict(os.environ)
    env.pop("QGA_MCP_TOKEN", None) if token is None else None
    command = [QGA_MCP, "--http", f"127.0.0.1:{port}", "--socket", f"host={host_agent.socket}"]
    process = subprocess.Popen([*command, *args], env=env, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert process.poll() is None, process.communicate()[1].decode()
                assert time.monotonic() < deadline, "qga-mcp did not start listening"
                time.sleep(0.05)
        yield port
    finally:
        process.terminate()
        process.communicate(timeout=10)


def post(port: int, headers: dict[str, str]) -> int:
    """POST an initialize request with ``headers``; the HTTP status."""
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
        return connection.getresponse().status
    finally:
        connection.close()


@pytest.mark.anyio
async def test_a_call_through_streamable_http(host_agent: HostAgent) -> None:
    with http_server(host_agent) as port:
        async with Client(f"http://127.0.0.1:{port}/mcp") as client:
            tools = {t.name for t in (await client.list_tools()).tools}
            result = await client.call_tool("get_hostname", {"domain": "host"})
    assert "run_command" not in tools
    assert not result.is_error
    assert result.structured_content == {"domain": "host", "result": socket.gethostname()}


def test_wrong_origin_and_host_are_refused(host_agent: HostAgent) -> None:
    with http_server(host_agent) as port:
        assert post(port, {"Origin": f"http://localhost:{port}"}) == 200
        assert post(port, {"Origin": "http://evil.example"}) == 403
        assert post(port, {"Origin": f"http://evil.example:{port}"}) == 403
        assert post(port, {"Host": f"evil.example:{port}"}) == 421


def test_extra_origin_can_be_allowed(host_agent: HostAgent) -> None:
    with http_server(host_agent, "--allow-origin", "https://ui.example") as port:
        assert post(port, {"Origin": "https://ui.example"}) == 200
        assert post(port, {"Origin": "https://other.example"}) == 403


@pytest.mark.anyio
async def test_bearer_token_is_required_when_set(host_agent: HostAgent) -> None:
    with http_server(host_agent, token="t0ken-" + "x" * 20) as port:
        assert post(port, {}) == 401
        assert post(port, {"Authorization": "Bearer wrong"}) == 401
        assert post(port, {"Authorization": "Bearer t0ken-" + "x" * 20}) == 200
        headers = {"Authorization": "Bearer t0ken-" + "x" * 20}
        async with (
            httpx2.AsyncClient(headers=headers) as http,
            Client(streamable_http_client(f"http://127.0.0.1:{port}/mcp", http_client=http)) as c,
        ):
            assert not (await c.call_tool("get_hostname", {"domain": "host"})).is_error


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
