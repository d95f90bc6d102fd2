"""``qga-mcp`` / ``python -m mcp_server``: parse the configuration, set up logging, serve."""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

from qga_libvirt.commands import load_user_commands
from qga_libvirt.discovery import quiet_libvirt_errors

from .config import ConfigError, generate_token, load_config, load_token
from .server import serve


def main(argv: Sequence[str] | None = None) -> int:
    """Run the server; returns the exit status (2 for a configuration error)."""
    quiet_libvirt_errors()  # the server owns its process: errors go to its clients
    try:
        load_user_commands()  # $QGA_COMMANDS: the raw group knows users' declared commands
        config = load_config(argv)
        token = load_token(config)
        if config.http is not None and token is None and config.http_is_loopback:
            token, path = generate_token(config)
            print(
                f"qga-mcp: no bearer token was given: generated one into {path} (mode 0600); "
                f"clients must send 'Authorization: Bearer {token}'",
                file=sys.stderr,
                flush=True,
            )
    except (ConfigError, ImportError) as exc:
        print(f"qga-mcp: {exc}", file=sys.stderr)
        return 2
    # Before the SDK configures logging, so ours wins: plain lines on stderr, never stdout
    # (stdout is the stdio transport).
    logging.basicConfig(
        level=config.log_level,
        stream=sys.stderr,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    try:
        serve(config, token)
    except ConfigError as exc:
        print(f"qga-mcp: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
