"""What qga-mcp costs a model's context: tools/list and typical answers, in tokens.

Tokens are estimated as characters / 4 of the compact JSON a host passes to the model
(no tokenizer with its encodings is installable offline here: tiktoken fetches them
from the internet at first use). For English prose and JSON that estimate is within
about 15% of the GPT/Claude BPE counts; treat the figures as +-15%.

- tools/list: per configuration (the default read-only inventory, every group), the
  model-visible part of each tool (name, title, description, inputSchema, annotations),
  with and without its outputSchema (many hosts do not show the output schema to the
  model).
- answers: one typical call of each tool against the host's own qemu-ga (a real agent;
  the tools the host agent refuses show their refusal's size), text and structured
  content, and their sum, which is what ``max-output-bytes`` bounds.

    python -m bench.mcp_tokens
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import anyio
from mcp import Client
from mcp.types import CallToolResult, TextContent, Tool

from mcp_server import Config, Group, build_server
from qga_libvirt.testing import HostAgent

CHARS_PER_TOKEN = 4
DEFAULT_LIMIT = 2000


def tokens(text: str) -> int:
    """The estimate: characters / 4, rounded up."""
    return -(-len(text) // CHARS_PER_TOKEN)


def visible(tool: Tool, *, output_schema: bool, extras: bool = False) -> str:
    """The part of a tool a host shows the model, as compact JSON: name, description and
    input schema (what the Anthropic and OpenAI tool APIs take); ``extras`` adds the
    title and annotations (which hosts use for their UI and consent, not the model)."""
    shown: dict[str, Any] = {
        "name": tool.name,
        "description": tool.description,
        "inputSchema": tool.input_schema,
    }
    if extras:
        shown["title"] = tool.title
        if tool.annotations is not None:
            shown["annotations"] = tool.annotations.model_dump(by_alias=True, exclude_none=True)
    if output_schema and tool.output_schema is not None:
        shown["outputSchema"] = tool.output_schema
    return json.dumps(shown, separators=(",", ":"), ensure_ascii=False)


async def list_tokens(config: Config) -> tuple[int, int, int, int, list[tuple[str, int]]]:
    """(tools, tokens without outputSchema, with it, the whole entries, per tool without)."""
    async with Client(build_server(config)) as client:
        tools = (await client.list_tools()).tools
    bare = [tokens(visible(t, output_schema=False)) for t in tools]
    full = [tokens(visible(t, output_schema=True)) for t in tools]
    whole = [tokens(visible(t, output_schema=True, extras=True)) for t in tools]
    per_tool = [(t.name, n) for t, n in zip(tools, bare, strict=True)]
    return len(tools), sum(bare), sum(full), sum(whole), per_tool


def sizes(result: CallToolResult) -> tuple[int, int]:
    text = "".join(b.text for b in result.content if isinstance(b, TextContent))
    structured = (
        json.dumps(result.structured_content, separators=(",", ":"), ensure_ascii=False)
        if result.structured_content is not None
        else ""
    )
    return len(text.encode()), len(structured.encode())


async def answers(socket_path: str, scratch: Path) -> list[tuple[str, str, int, int]]:
    """(tool, ok/error, text bytes, structured bytes) for a typical call of each tool."""
    (scratch / "app.log").write_text("".join(f"2026-12-01 line {n} ok\n" for n in range(5000)))
    config = Config(
        socket=[f"host={socket_path}"],
        enable=list(Group),
        read_path=["/etc", str(scratch)],
        write_path=[str(scratch / "out")],
        allow_exec=["/bin/uname", "/bin/sleep", "/bin/cat"],
        confirm_destructive="never",
    )
    host = {"domain": "host"}
    calls: list[tuple[str, dict[str, Any]]] = [
        ("list_domains", {}),
        ("agent_info", host),
        ("get_osinfo", host),
        ("get_hostname", host),
        ("get_users", host),
        ("get_timezone", host),
        ("get_time", host),
        ("network_get_interfaces", host),
        ("get_fsinfo", host),
        ("get_disks", host),
        ("get_vcpus", host),
        ("get_cpustats", host),
        ("fsfreeze_status", host),
        ("wait_for_agent", host),
        ("read_file", {**host, "path": "/etc/hostname"}),
        ("read_file", {**host, "path": str(scratch / "app.log")}),
        ("read_file", {**host, "path": str(scratch / "app.log"), "tail": True, "length": 2000}),
        ("read_file", {**host, "path": str(scratch / "app.log"), "grep": "line 4[0-9]{2} "}),
        ("list_dir", {**host, "path": "/etc"}),
        ("write_file", {**host, "path": str(scratch / "out"), "content": "hello\n"}),
        ("run_command", {**host, "argv": ["/bin/uname", "-a"]}),
        ("run_command", {**host, "argv": ["/bin/cat", str(scratch / "app.log")]}),
        ("run_command", {**host, "argv": ["/bin/sleep", "5"], "timeout_s": 0.5}),
        ("fsfreeze_freeze", host),
        ("fsfreeze_thaw", host),
        ("set_user_password", {**host, "username": "nobody", "password": "x"}),
        ("ssh_authorized_keys_get", {**host, "username": "root"}),
        ("shutdown", host),
        ("agent_command", {**host, "command": "guest-get-host-name"}),
    ]
    rows = []
    async with Client(build_server(config)) as client:
        for name, args in calls:
            result = await client.call_tool(name, args)
            if (
                name == "run_command"
                and result.structured_content
                and "handle" in (result.structured_content)
            ):
                handle = result.structured_content["handle"]
                shown = f"{name} (still running)"
                rows.append((shown, "ok", *sizes(result)))
                status = await client.call_tool(
                    "command_status", {**host, "handle": handle, "timeout_s": 0.2}
                )
                rows.append(("command_status (running)", "ok", *sizes(status)))
                cancel = await client.call_tool("cancel_command", {**host, "handle": handle})
                rows.append(("cancel_command", _ok(cancel), *sizes(cancel)))
                continue
            label = name
            extra = {k: v for k, v in args.items() if k in ("tail", "grep")}
            if extra or (name == "read_file" and "app.log" in str(args.get("path"))):
                label += " " + (" ".join(f"{k}={v}" for k, v in extra.items()) or "(a page)")
            if name == "run_command":
                label += f" {args['argv'][0]}"
            rows.append((label, _ok(result), *sizes(result)))
    return rows


def _ok(result: CallToolResult) -> str:
    return "error" if result.is_error else "ok"


async def measure() -> None:
    print(f"tokens = characters / {CHARS_PER_TOKEN} of compact JSON (see the module docs)\n")
    print("tools/list                       tools  tokens  +outputSchema  +title,annotations")
    configs = {
        "default (inventory only)": Config(socket=["host=/nonexistent"]),
        "all groups": Config(
            socket=["host=/nonexistent"],
            enable=list(Group),
            read_path=["/"],
            write_path=["/tmp"],
            allow_exec=["/bin/true"],
        ),
    }
    per_tool: list[tuple[str, int]] = []
    for label, config in configs.items():
        count, bare, full, whole, per_tool = await list_tokens(config)
        print(f"  {label:30} {count:5} {bare:7} {full:14} {whole:19}")
        if label.startswith("default") and bare > DEFAULT_LIMIT:
            print(f"  !! the default tools/list is over {DEFAULT_LIMIT} tokens")
    print("\nper tool (all groups, without outputSchema):")
    for name, count in sorted(per_tool, key=lambda item: -item[1]):
        print(f"  {name:28} {count:5}")
    with HostAgent() as agent, tempfile.TemporaryDirectory() as scratch:
        rows = await answers(str(agent.socket), Path(scratch))
    print(
        "\ntypical answers (host qemu-ga)          outcome  text B  structured B  total B  ~tokens"
    )
    for name, outcome, text, structured in rows:
        total = text + structured
        print(
            f"  {name[:40]:40} {outcome:7} {text:7} {structured:13} {total:8} "
            f"{-(-total // CHARS_PER_TOKEN):8}"
        )


def main() -> None:
    anyio.run(measure)


if __name__ == "__main__":
    main()
