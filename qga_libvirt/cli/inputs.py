"""What ``qga`` reads besides its arguments: stdin, files, passwords."""

from __future__ import annotations

import getpass
import os
import sys

__all__ = ["UsageError", "read_bytes", "read_lines", "read_secret", "stdin_is_piped"]


class UsageError(Exception):
    """The command line or its input is wrong: exit 2 with this one line."""


def stdin_is_piped() -> bool:
    """Whether stdin is open and not a terminal (so reading it will not prompt)."""
    try:
        return not os.isatty(sys.stdin.fileno())
    except (AttributeError, OSError, ValueError):
        return False


def read_bytes(path: str) -> bytes:
    """A local file's content; ``-`` is stdin.

    Raises:
        OSError: the file cannot be read.
    """
    if path == "-":
        return sys.stdin.buffer.read()
    with open(path, "rb") as source:
        return source.read()


def read_lines() -> list[str]:
    """The non-empty lines of stdin that are not ``#`` comments (e.g. SSH public keys)."""
    text = sys.stdin.read() if stdin_is_piped() else ""
    return [line.strip() for line in text.splitlines() if line.strip() and line[0] != "#"]


def read_secret(prompt: str) -> str:
    """A secret: asked twice on the terminal without echo, else stdin's first line.

    Raises:
        UsageError: nothing on stdin, or the two entries differ.
    """
    if not stdin_is_piped():
        first = getpass.getpass(prompt)
        if getpass.getpass("Again: ") != first:
            raise UsageError("the two entries differ: nothing was changed")
        secret = first
    else:
        secret = sys.stdin.readline().removesuffix("\n").removesuffix("\r")
    if not secret:
        raise UsageError("no password given (type it at the prompt, or pipe it on stdin)")
    return secret
