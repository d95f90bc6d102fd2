"""What the server lets through, both ways.

In: which domains a tool may touch (``allow-domain`` globs), which guest paths the file
tools may use (``read-path``/``write-path``, lexical, no ``..``), which executables
run_command may start (``allow-exec``), and how large a request may be.

Out: everything a guest says is untrusted. It is capped (``max-output-bytes``), control
characters that could hide text are replaced, and it reaches the model fenced between
markers carrying a random nonce the guest cannot guess, labelled as data from the guest
(:func:`fence`), so that text such as "ignore your instructions" inside a file stays
data.

Every refusal is a :class:`PolicyError` whose message says what the policy is and which
option the operator would change; the model cannot change it.
"""

from __future__ import annotations

import fnmatch
import re
import secrets
from typing import Final

from .config import Config

__all__ = ["Policy", "PolicyError", "clean", "fence", "guest_path", "utf8_prefix"]


class PolicyError(Exception):
    """The server's policy refuses the call; the message says why and what would change it."""


_HIDING: Final = re.compile(
    "[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff]"
)


def clean(text: str) -> str:
    """Text with control, zero-width and bidi-override characters replaced by U+FFFD.

    Terminal escapes, bidi overrides and zero-width characters can make text read
    differently from what it is; newlines and tabs stay.
    """
    return _HIDING.sub("\ufffd", text)


def fence(label: str, text: str) -> str:
    """``text`` between markers with a random nonce, so it cannot close its own fence."""
    tag = f"{label}-{secrets.token_hex(6)}"
    return f"<{tag}>\n{clean(text)}\n</{tag}>"


_LEADS: Final = ((2, 0xE0), (3, 0xF0), (4, 0xF8))  # length, mask; the lead is mask << 1


def utf8_prefix(data: bytes, limit: int) -> bytes:
    """At most ``limit`` bytes of ``data``, not ending inside a UTF-8 character."""
    head = data[:limit]
    for back in range(1, min(4, len(head)) + 1):
        byte = head[-back]
        if byte & 0xC0 == 0x80:  # a continuation byte: look further back for the lead
            continue
        need = (
            2
            if byte >> 5 == 0b110
            else 3
            if byte >> 4 == 0b1110
            else 4
            if byte >> 3 == 0b11110
            else 1
        )
        return head[:-back] if need > back else head
    return head


def guest_path(path: str) -> str:
    """An absolute POSIX guest path, normalised (``//`` and ``.`` removed).

    Raises:
        PolicyError: the path is relative, has a ``..`` component or a NUL byte.
    """
    if "\0" in path:
        raise PolicyError(f"the path {path!r} has a NUL byte")
    if not path.startswith("/"):
        raise PolicyError(f"the path {path!r} is not absolute: give the full path from /")
    parts = [part for part in path.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise PolicyError(f"the path {path!r} has a '..' component: give the path without it")
    return "/" + "/".join(parts)


def _under(path: str, root: str) -> bool:
    return root == "/" or path == root or path.startswith(root + "/")


class Policy:
    """The checks every tool call goes through; built from the :class:`Config`."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.read_roots = [guest_path(p) for p in config.read_path]
        self.write_roots = [guest_path(p) for p in config.write_path]

    @property
    def max_output_bytes(self) -> int:
        return self.config.max_output_bytes

    # --- domains ----------------------------------------------------------------------

    def domain_allowed(self, name: str, hypervisor: str | None = None) -> bool:
        """Whether a domain (or a socket agent, with no hypervisor) may be touched."""
        full = f"{hypervisor}/{name}" if hypervisor else name
        return any(
            fnmatch.fnmatchcase(full if "/" in glob else name, glob)
            for glob in self.config.allow_domain
        )

    def check_domain(
        self, name: str, hypervisor: str | None = None, *, address: str | None = None
    ) -> None:
        """Raises PolicyError unless the domain matches an ``allow-domain`` glob.

        ``address`` is how the message names it (default ``HYPERVISOR/NAME``).
        """
        if not self.domain_allowed(name, hypervisor):
            shown = address or (f"{hypervisor}/{name}" if hypervisor else name)
            raise PolicyError(
                f"domain '{shown}' is not one this server may touch (allowed: "
                f"{', '.join(self.config.allow_domain)}); use list_domains to see the "
                "allowed ones, or ask the operator to add it with --allow-domain"
            )

    # --- paths ------------------------------------------------------------------------

    def check_read(self, path: str) -> str:
        """The normalised path, if read_file may read it; else PolicyError."""
        return self._check_path(path, self.read_roots, "read", "--read-path")

    def check_write(self, path: str) -> str:
        """The normalised path, if write_file may write it; else PolicyError."""
        return self._check_path(path, self.write_roots, "written", "--write-path")

    def _check_path(self, path: str, roots: list[str], verb: str, option: str) -> str:
        normal = guest_path(path)
        if not any(_under(normal, root) for root in roots):
            raise PolicyError(
                f"{normal} may not be {verb}: this server allows only paths under "
                f"{', '.join(roots) or '(none)'}; ask the operator to add it with {option}"
            )
        return normal

    # --- exec -------------------------------------------------------------------------

    def check_executable(self, argv0: str) -> None:
        """Raises PolicyError unless ``argv0`` matches ``allow-exec`` (when it is set)."""
        allowed = self.config.allow_exec
        if allowed and not any(fnmatch.fnmatchcase(argv0, glob) for glob in allowed):
            raise PolicyError(
                f"{argv0!r} may not be run: this server runs only {', '.join(allowed)} "
                "(argv[0] as given, no PATH lookup is done for the check); ask the "
                "operator to add it with --allow-exec"
            )

    def check_wait(self, seconds: float) -> None:
        """Raises PolicyError when a wait is over ``max-wait-seconds``."""
        cap = self.config.max_wait_seconds
        if seconds > cap:
            raise PolicyError(
                f"timeout_s={seconds:g} is over this server's cap of {cap:g} s: pass at "
                "most that; a command still running then returns a handle for command_status"
            )

    # --- sizes ------------------------------------------------------------------------

    def check_output(self, what: str, size: int) -> None:
        """Raises PolicyError when ``size`` bytes of output are over ``max-output-bytes``."""
        cap = self.max_output_bytes
        if size > cap:
            raise PolicyError(
                f"{what} is {size} bytes, over this server's cap of {cap} bytes per call "
                "(--max-output-bytes): ask for less"
            )

    def check_write_size(self, size: int) -> None:
        """Raises PolicyError when a write is over ``max-write-bytes``."""
        cap = self.config.max_write_bytes
        if size > cap:
            raise PolicyError(
                f"{size} bytes is over this server's cap of {cap} bytes per write "
                "(--max-write-bytes): write in parts with append=true"
            )
