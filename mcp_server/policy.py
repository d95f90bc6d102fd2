"""What the server lets through, both ways.

In: which domains a tool may touch (``allow-domain`` globs), which guest paths the file
tools may use (``read-path``/``write-path``: checked as given, no ``..``, and again as the
guest resolves them, in the file tools), which programs run_command may start and with
which leading arguments (``allow-exec`` entries, :class:`ExecRule`; launchers refused at
start, :data:`LAUNCHERS`), and how large a request may be.

Out: everything a guest says is untrusted. It is sized for a model (``max-output-bytes``),
every character that could hide text is replaced (:func:`clean`, :func:`clean_data`),
and it reaches the model fenced between
markers carrying a random nonce the guest cannot guess, labelled as data from the guest
(:func:`fence`), so that text such as "ignore your instructions" inside a file stays
data.

Every refusal is a :class:`PolicyError` whose message says what the policy is and which
option the operator would change; the model cannot change it.
"""

from __future__ import annotations

import fnmatch
import functools
import json
import secrets
import shlex
import unicodedata
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from .config import Config

__all__ = [
    "LAUNCHERS",
    "ExecRule",
    "Policy",
    "PolicyError",
    "clean",
    "clean_data",
    "fence",
    "guest_path",
    "may_contain",
    "parse_exec_rule",
    "utf8_prefix",
]


class PolicyError(Exception):
    """The server's policy refuses the call; the message says why and what would change it."""


@functools.lru_cache(maxsize=8192)
def _hiding(char: str) -> bool:
    """Whether a character can hide or disguise text: every control and format character
    (Cc, Cf: bidi controls, zero-width ones, the soft hyphen, U+061C, U+180E, the tag
    characters U+E0000-E007F), line/paragraph separators (Zl, Zp), variation selectors,
    unassigned and private-use code points, and lone surrogates."""
    if char in "\n\t":
        return False
    code = ord(char)
    if 0xFE00 <= code <= 0xFE0F or 0xE0100 <= code <= 0xE01EF or 0x180B <= code <= 0x180F:
        return True  # variation selectors (and Mongolian free variation selectors)
    return unicodedata.category(char) in ("Cc", "Cf", "Zl", "Zp", "Co", "Cn", "Cs")


def clean(text: str) -> str:
    """Text with every character that could hide or disguise text replaced by U+FFFD.

    Terminal escapes, bidi controls, zero-width and tag characters, variation selectors
    and line separators can make text read differently (to a person or a model) from
    what it is; newlines and tabs stay.
    """
    if text.isascii() and text.isprintable():
        return text
    return "".join("\ufffd" if _hiding(char) else char for char in text)


def clean_data(value: Any) -> Any:
    """A JSON value with :func:`clean` applied to every string in it, keys included."""
    if isinstance(value, str):
        return clean(value)
    if isinstance(value, list):
        return [clean_data(item) for item in value]
    if isinstance(value, dict):
        return {clean(str(key)): clean_data(item) for key, item in value.items()}
    return value


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


LAUNCHERS: Final = (
    *("sh", "bash", "dash", "ash", "zsh", "ksh*", "mksh", "csh", "tcsh", "fish", "rbash"),
    *("busybox", "toybox", "env", "xargs", "find", "nice", "nohup", "timeout", "ionice"),
    *("chrt", "taskset", "stdbuf", "setsid", "sudo", "su", "doas", "runuser", "setpriv"),
    *("unshare", "nsenter", "chroot", "capsh", "pkexec", "systemd-run", "start-stop-daemon"),
    *("strace", "ltrace", "gdb", "watch", "flock", "time", "script", "expect", "parallel"),
    *("python*", "perl*", "ruby*", "node*", "php*", "lua*", "tclsh*", "wish*", "awk", "gawk"),
    *("mawk", "nawk", "sed", "ssh", "at", "batch", "vi", "vim", "less", "more", "man", "git"),
    *("tar", "rsync", "make", "dbus-run-session", "ld-linux*", "ld.so", "cmd.exe", "pwsh*"),
    "powershell*",
)
"""Programs that run another program named in their arguments (or a script): an exec
allow-list entry that matches one allows everything, so it is refused at start-up
unless the operator passes --allow-exec-launchers."""


def _bad_program(path: str) -> str | None:
    """Why ``path`` cannot name a program unambiguously, or None when it can."""
    if "\0" in path:
        return "it has a NUL byte"
    if not path.startswith("/"):
        return "it is not an absolute path (no PATH lookup is done)"
    if "//" in path or path.endswith("/"):
        return "it has an empty component ('//' or a trailing '/')"
    if any(part in (".", "..") for part in path.split("/")):
        return "it has a '.' or '..' component"
    return None


@dataclass(frozen=True)
class ExecRule:
    """One ``allow-exec`` entry: a program (a glob whose wildcards never cross '/')
    and a fixed prefix the arguments after argv[0] must start with."""

    program: str
    prefix: tuple[str, ...] = ()

    def matches(self, argv: list[str]) -> bool:
        """Whether ``argv`` (whose argv[0] was checked by :func:`_bad_program`) is allowed."""
        pattern, path = self.program.split("/"), argv[0].split("/")
        if len(pattern) != len(path):
            return False
        if not all(
            fnmatch.fnmatchcase(part, glob) for part, glob in zip(path, pattern, strict=True)
        ):
            return False
        return tuple(argv[1 : 1 + len(self.prefix)]) == self.prefix

    def launcher(self) -> str | None:
        """The known launcher this entry would let run, or None."""
        base = self.program.rsplit("/", 1)[-1]
        for name in LAUNCHERS:
            example = name.replace("*", "3")
            if fnmatch.fnmatchcase(base, name) or fnmatch.fnmatchcase(example, base):
                return name
        return None

    def __str__(self) -> str:
        return shlex.join([self.program, *self.prefix])


def parse_exec_rule(entry: str) -> ExecRule:
    """An ``allow-exec`` entry: ``PROGRAM [ARG...]``, split like a shell would.

    Raises:
        ValueError: the program is not an absolute path without '.', '..' or '//'.
    """
    try:
        words = shlex.split(entry)
    except ValueError as exc:
        raise ValueError(f"allow-exec entry {entry!r}: {exc}") from None
    if not words:
        raise ValueError("an allow-exec entry is empty: name a program, e.g. /usr/bin/uptime")
    why = _bad_program(words[0])
    if why:
        raise ValueError(f"allow-exec entry {entry!r}: its program {words[0]!r} is refused: {why}")
    return ExecRule(words[0], tuple(words[1:]))


def may_contain(root: str, program: str) -> bool:
    """Whether a program matched by the glob ``program`` could lie under ``root``."""
    if root == "/":
        return True
    dirs, parts = program.split("/")[:-1], root.split("/")
    return len(parts) <= len(dirs) and all(
        fnmatch.fnmatchcase(part, glob) for part, glob in zip(parts, dirs, strict=False)
    )


def guest_path(path: str) -> str:
    """An absolute POSIX guest path, normalised (``//`` and ``.`` removed).

    Raises:
        PolicyError: the path is relative, has a ``..`` component or a NUL byte.
    """
    if "\0" in path:
        raise PolicyError(f"the path {json.dumps(path)} has a NUL byte")
    if not path.startswith("/"):
        raise PolicyError(f"the path {json.dumps(path)} is not absolute: give the full path from /")
    parts = [part for part in path.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise PolicyError(
            f"the path {json.dumps(path)} has a '..' component: give the path without it"
        )
    return "/" + "/".join(parts)


def _under(path: str, root: str) -> bool:
    return root == "/" or path == root or path.startswith(root + "/")


class Policy:
    """The checks every tool call goes through; built from the :class:`Config`."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.read_roots = [guest_path(p) for p in config.read_path]
        self.write_roots = [guest_path(p) for p in config.write_path]
        self.exec_rules = [parse_exec_rule(entry) for entry in config.allow_exec]

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

    def refusal(self, address: str) -> str:
        """What a refused domain gets, the same whether it exists or not."""
        return (
            f"domain '{address}' does not exist or is not one this server may touch; use "
            "list_domains to see the allowed ones, or ask the operator to add it with "
            "--allow-domain"
        )

    def check_domain(self, name: str, hypervisor: str | None = None) -> None:
        """Raises PolicyError unless the domain matches an ``allow-domain`` glob."""
        if not self.domain_allowed(name, hypervisor):
            raise PolicyError(self.refusal(f"{hypervisor}/{name}" if hypervisor else name))

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

    def check_exec(self, argv: list[str]) -> None:
        """Raises PolicyError unless an ``allow-exec`` entry allows ``argv``."""
        for arg in argv:
            if "\0" in arg:
                raise PolicyError("an argument has a NUL byte: the guest would cut it there")
        why = _bad_program(argv[0])
        if why:
            raise PolicyError(
                f"argv[0] {json.dumps(argv[0])} may not be run: {why}; give the program's absolute "
                "path, as this server's allow-list names it"
            )
        if not any(rule.matches(argv) for rule in self.exec_rules):
            allowed = "; ".join(map(str, self.exec_rules)) or "(none)"
            raise PolicyError(
                f"{shlex.join(argv[:4])}{' ...' if len(argv) > 4 else ''} may not be run: this "
                f"server runs only: {allowed} (a program's arguments must start with the ones "
                "listed after it); ask the operator to add it with --allow-exec"
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

    def check_output(self, what: str, size: int, hint: str) -> None:
        """Raises PolicyError when a reply of ``size`` bytes (its JSON, which the text and
        the structured copy both carry) does not fit ``max-output-bytes``.

        ``hint``: how to ask for less with this tool, in its own arguments; or how the
        operator can help, for a tool that has none.
        """
        cap = self.max_output_bytes
        if 2 * size + 1024 > cap:
            raise PolicyError(
                f"{what} is {size} bytes: with its structured copy it is over this "
                f"server's cap of {cap} bytes per call (--max-output-bytes); {hint}"
            )

    def check_write_size(self, size: int) -> None:
        """Raises PolicyError when a write is over ``max-write-bytes``."""
        cap = self.config.max_write_bytes
        if size > cap:
            raise PolicyError(
                f"{size} bytes is over this server's cap of {cap} bytes per write "
                "(--max-write-bytes): write in parts with append=true"
            )
