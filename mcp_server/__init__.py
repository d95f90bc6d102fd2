"""qga-mcp: the QEMU guest agent as MCP tools an LLM agent can be trusted with.

Read-only inventory tools by default; every other group (files-read, exec, files-write,
freeze, credentials, power, raw) is registered only when enabled. See docs/mcp.md.

    from mcp_server import Config, build_server

    server = build_server(Config(connect=["qemu:///system"], enable=["exec"]))
"""

try:
    import mcp  # noqa: F401  (the SDK: the one dependency the library does without)
except ModuleNotFoundError as exc:
    raise ImportError(
        "qga-mcp needs the MCP SDK, which the library alone does not: "
        "pip install 'qga-libvirt[mcp]'"
    ) from exc

from .config import Config, ConfigError, Group, load_config
from .policy import Policy, PolicyError
from .server import build_server, serve

__all__ = [
    "Config",
    "ConfigError",
    "Group",
    "Policy",
    "PolicyError",
    "build_server",
    "load_config",
    "serve",
]
