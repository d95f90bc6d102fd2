"""Configuration: flags, environment variables and a TOML file, under the same names.

Every option is a field of :class:`Config` and has one name, used three ways::

    flag          --allow-domain 'web*'              (repeat it for a list)
    environment   QGA_MCP_ALLOW_DOMAIN='web*,db*'    (lists are comma-separated)
    TOML file     allow-domain = ["web*", "db*"]     (--config FILE or QGA_MCP_CONFIG)

The file is read first, then the environment, then the flags; a later source replaces
an option's whole value. The bearer token for HTTP is the exception: it is a secret, so
it comes from ``QGA_MCP_TOKEN`` or from the file named by ``token-file``, never a flag
(flags show in ``ps``).
"""

from __future__ import annotations

import argparse
import enum
import ipaddress
import os
import re
import secrets
import tempfile
import tomllib
from collections.abc import Mapping, Sequence
from typing import Any, Final, Literal, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from qga_libvirt.discovery import default_uri

from .policy import may_contain, parse_exec_rule

__all__ = [
    "ENV_PREFIX",
    "Config",
    "ConfigError",
    "Group",
    "generate_token",
    "load_config",
    "load_token",
]

ENV_PREFIX: Final = "QGA_MCP_"
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


class ConfigError(Exception):
    """The configuration is invalid; the message names the option and what to change."""


class Group(enum.StrEnum):
    """Tool groups beyond the read-only inventory; each must be enabled to be listed."""

    FILES_READ = "files-read"
    EXEC = "exec"
    FILES_WRITE = "files-write"
    FREEZE = "freeze"
    CREDENTIALS = "credentials"
    POWER = "power"
    RAW = "raw"


def _dashed(name: str) -> str:
    return name.replace("_", "-")


def _split(entry: str) -> tuple[str | None, str]:
    """``NAME=VALUE`` -> (NAME, VALUE); anything else (a URI has ':' before any '=') -> None."""
    name, sep, value = entry.partition("=")
    return (name, value) if sep and _NAME.match(name) else (None, entry)


class Config(BaseModel):
    """What the server serves and what it allows. Field descriptions are the flags' help."""

    model_config = ConfigDict(
        frozen=True, extra="forbid", alias_generator=_dashed, validate_by_name=True
    )

    connect: list[str] = Field(
        default_factory=list,
        description="libvirt URI to serve; with several hypervisors NAME=URI each, and "
        "domains are addressed NAME/DOMAIN (default: like virsh, $LIBVIRT_DEFAULT_URI "
        "or qemu:///system, unless only --socket is given)",
    )
    socket: list[str] = Field(
        default_factory=list,
        description="NAME=PATH: a guest agent on a unix socket (a chardev, or qemu-ga "
        "in unix-listen mode), addressed as NAME",
    )
    allow_domain: list[str] = Field(
        default_factory=lambda: ["*"],
        description="glob of the domains tools may touch (matched against the name, or "
        "against NAME/DOMAIN when the glob has a '/'); default all",
    )
    enable: list[Group] = Field(
        default_factory=list,
        description="tool group to list besides the read-only inventory: "
        + ", ".join(g.value for g in Group),
    )
    read_path: list[str] = Field(
        default_factory=list,
        description="guest directory (or file) read_file may read, with everything below "
        "it; files-read needs at least one ('/' allows all)",
    )
    write_path: list[str] = Field(
        default_factory=list,
        description="guest directory (or file) write_file may write; files-write needs "
        "at least one",
    )
    resolve_symlinks: bool = Field(
        default=True,
        description="check read-path/write-path against the path the guest resolves (its "
        "symlinks followed, via realpath through guest-exec); without it a link under an "
        "allowed directory could lead anywhere",
    )
    allow_exec: list[str] = Field(
        default_factory=list,
        description="program run_command may start, with the arguments it must start "
        "with: 'PROGRAM [ARG...]', PROGRAM an absolute path or a glob whose wildcards do "
        "not cross '/' (e.g. '/usr/bin/uptime', '/usr/bin/systemctl status'); the exec "
        "group needs at least one; an empty list allows nothing",
    )
    allow_exec_launchers: bool = Field(
        default=False,
        description="accept allow-exec entries that match a shell or launcher (sh, env, "
        "xargs, find, busybox, python, ...), which can run any program",
    )
    max_output_bytes: int = Field(
        default=16384,
        gt=0,
        description="cap on what one call returns: command output per stream, a file "
        "page, an inventory reply",
    )
    max_write_bytes: int = Field(default=1 << 20, gt=0, description="cap on what write_file writes")
    max_wait_seconds: float = Field(
        default=300.0, gt=0, description="cap on timeout_s of run_command and command_status"
    )
    max_freeze_seconds: float = Field(
        default=60.0,
        gt=0,
        description="filesystems frozen through fsfreeze_freeze are thawed by the server "
        "after this long at most",
    )
    confirm_destructive: Literal["ask", "ask-or-allow", "never"] = Field(
        default="ask",
        description="before a call that changes the guest (exec, writes, credentials, "
        "freeze, power, raw), ask the human through the MCP client (elicitation): ask = "
        "and refuse when the client cannot ask; ask-or-allow = run it then; never = never ask",
    )
    audit_log: str | None = Field(
        default=None,
        description="also append one JSON line per tool call to this file (who, what, "
        "which domain, outcome; never secrets)",
    )
    http: str | None = Field(
        default=None,
        description="serve streamable HTTP on HOST:PORT (or PORT, on 127.0.0.1) instead "
        "of stdio, always with a bearer token (generated into a 0600 file when none is "
        "given on loopback; a non-loopback HOST needs one given)",
    )
    unix: str | None = Field(
        default=None,
        description="serve streamable HTTP on a unix socket at PATH (mode 0600: only this "
        "user can connect) instead of stdio; no token needed",
    )
    allow_host: list[str] = Field(
        default_factory=list,
        description="Host header accepted over HTTP besides the loopback names and the "
        "bound address (host:port, or host:* for any port)",
    )
    allow_origin: list[str] = Field(
        default_factory=list,
        description="Origin header accepted over HTTP besides loopback ones "
        "(http://host:port, or http://host:*)",
    )
    token_file: str | None = Field(
        default=None,
        description="file holding the HTTP bearer token (or set QGA_MCP_TOKEN); "
        "required when binding a non-loopback address",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", description="stderr log level (the audit lines are INFO)"
    )

    @field_validator("read_path", "write_path")
    @classmethod
    def _absolute(cls, paths: list[str]) -> list[str]:
        for path in paths:
            if not path.startswith("/"):
                raise ValueError(f"{path!r} is not an absolute guest path")
        return paths

    @field_validator("socket")
    @classmethod
    def _named(cls, entries: list[str]) -> list[str]:
        for entry in entries:
            if _split(entry)[0] is None:
                raise ValueError(f"{entry!r} is not NAME=PATH")
        return entries

    @model_validator(mode="after")
    def _consistent(self) -> Config:
        names = list(self.hypervisors) + list(self.sockets)
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"names used twice in --connect/--socket: {', '.join(dupes)}")
        unnamed = [e for e in self.connect if _split(e)[0] is None]
        if unnamed and len(self.connect) > 1:
            raise ValueError("with several --connect, name each one: --connect NAME=URI")
        if Group.FILES_READ in self.enable and not self.read_path:
            raise ValueError("--enable files-read needs --read-path (use --read-path / for all)")
        if Group.FILES_WRITE in self.enable and not self.write_path:
            raise ValueError("--enable files-write needs at least one --write-path")
        if Group.EXEC in self.enable and not self.allow_exec:
            raise ValueError(
                "--enable exec needs at least one --allow-exec PROGRAM naming what "
                "run_command may start (e.g. --allow-exec /usr/bin/uptime)"
            )
        self._check_exec_rules()
        if self.http is not None:
            self.http_bind  # noqa: B018 - validates HOST:PORT
        if self.http is not None and self.unix is not None:
            raise ValueError("--http and --unix: choose one")
        return self

    def _check_exec_rules(self) -> None:
        rules = [parse_exec_rule(entry) for entry in self.allow_exec]
        if self.allow_exec_launchers:
            return
        for rule in rules:
            launcher = rule.launcher()
            if launcher is not None:
                raise ValueError(
                    f"allow-exec entry {rule} lets the model run {launcher!r}, which runs "
                    "any other program: name the programs themselves, or pass "
                    "--allow-exec-launchers if that is really meant (see docs/mcp.md)"
                )
            for root in self.write_path if Group.FILES_WRITE in self.enable else ():
                if may_contain(root, rule.program):
                    raise ValueError(
                        f"allow-exec entry {rule} may run a file write_file can write "
                        f"(--write-path {root}): that allows any program; keep the two "
                        "apart, or pass --allow-exec-launchers if that is really meant"
                    )

    @property
    def hypervisors(self) -> dict[str, str]:
        """Hypervisor name -> libvirt URI. A lone unnamed ``--connect`` is "default"."""
        if not self.connect and not self.socket:
            return {"default": default_uri()}
        return {name or "default": uri for name, uri in map(_split, self.connect)}

    @property
    def sockets(self) -> dict[str, str]:
        """Agent name -> unix socket path."""
        return {name or "": path for name, path in map(_split, self.socket)}

    @property
    def http_bind(self) -> tuple[str, int]:
        """``--http`` as (host, port); the host defaults to 127.0.0.1."""
        assert self.http is not None
        host, sep, port = self.http.rpartition(":")
        if not sep:
            host, port = "127.0.0.1", self.http
        host = host.strip("[]") or "127.0.0.1"
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"--http {self.http!r}: expected HOST:PORT or PORT")
        return host, int(port)

    @property
    def http_is_loopback(self) -> bool:
        host = self.http_bind[0]
        if host == "localhost":
            return True
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:
            return False  # a host name: it may resolve to anything


def _is_list(annotation: Any) -> bool:
    return get_origin(annotation) is list


def _choices(annotation: Any) -> list[str] | None:
    inner = get_args(annotation)[0] if _is_list(annotation) else annotation
    if isinstance(inner, type) and issubclass(inner, enum.Enum):
        return [member.value for member in inner]
    if get_origin(inner) is Literal:
        return [str(value) for value in get_args(inner)]
    return None


_METAVARS: Final = {
    "connect": "[NAME=]URI",
    "socket": "NAME=PATH",
    "allow_domain": "GLOB",
    "enable": "GROUP",
    "read_path": "PATH",
    "write_path": "PATH",
    "resolve_symlinks": "",
    "allow_exec": "'PROGRAM [ARG...]'",
    "allow_exec_launchers": "",
    "max_output_bytes": "BYTES",
    "max_write_bytes": "BYTES",
    "max_wait_seconds": "SECONDS",
    "max_freeze_seconds": "SECONDS",
    "confirm_destructive": "POLICY",
    "audit_log": "FILE",
    "http": "[HOST:]PORT",
    "unix": "PATH",
    "allow_host": "HOST:PORT",
    "allow_origin": "ORIGIN",
    "token_file": "FILE",
    "log_level": "LEVEL",
}


def build_parser() -> argparse.ArgumentParser:
    """The command line, derived from the fields of :class:`Config`."""
    parser = argparse.ArgumentParser(
        prog="qga-mcp",
        allow_abbrev=False,  # --token must never silently mean --token-file
        description="MCP server for QEMU guest agents: read-only inventory tools by "
        "default; other tool groups only when enabled. Every option can also be set as "
        f"{ENV_PREFIX}NAME in the environment or as name = ... in a TOML file.",
    )
    parser.add_argument(
        "--config", metavar="FILE", help=f"TOML file of options (or {ENV_PREFIX}CONFIG)"
    )
    for name, field in Config.model_fields.items():
        flag = "--" + _dashed(name)
        many = _is_list(field.annotation)
        shown = "" if many or field.default is None else f" (default {field.default})"
        if field.annotation is bool:
            parser.add_argument(
                flag,
                dest=name,
                action=argparse.BooleanOptionalAction,
                default=argparse.SUPPRESS,
                help=field.description,
            )
            continue
        parser.add_argument(
            flag,
            dest=name,
            action="append" if many else "store",
            choices=_choices(field.annotation),
            metavar=_METAVARS[name],
            default=argparse.SUPPRESS,
            help=f"{field.description}{shown}",
        )
    return parser


def _from_env(environ: Mapping[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name, field in Config.model_fields.items():
        raw = environ.get(ENV_PREFIX + name.upper())
        if raw is None:
            continue
        if _is_list(field.annotation):
            values[name] = [item.strip() for item in raw.split(",") if item.strip()]
        else:
            values[name] = raw
    return values


def _from_toml(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as file:
            data = tomllib.load(file)
    except OSError as exc:
        raise ConfigError(f"cannot read the config file {path}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"the config file {path} is not valid TOML: {exc}") from exc
    fields = {_dashed(name): name for name in Config.model_fields}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            f"unknown option(s) in {path}: {', '.join(unknown)} (known: {', '.join(fields)})"
        )
    return {fields[key]: value for key, value in data.items()}


def _explain(exc: ValidationError) -> str:
    lines = []
    for error in exc.errors(include_url=False):
        field = str(error["loc"][0]) if error["loc"] else ""
        where = f"--{_dashed(field)} ({ENV_PREFIX}{field.upper()}): " if field else ""
        lines.append(where + error["msg"].removeprefix("Value error, "))
    return "invalid configuration: " + "; ".join(lines)


def load_config(
    argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
) -> Config:
    """The configuration from a TOML file, the environment and the flags, in that order.

    Raises:
        ConfigError: an option is unknown or invalid; the message names it.
        SystemExit: from argparse, for ``--help`` and malformed flags.
    """
    environ = os.environ if environ is None else environ
    args = vars(build_parser().parse_args(argv))
    config_file = args.pop("config", None) or environ.get(ENV_PREFIX + "CONFIG")
    values = _from_toml(config_file) if config_file else {}
    values |= _from_env(environ)
    values |= args
    try:
        return Config.model_validate(values)
    except ValidationError as exc:
        raise ConfigError(_explain(exc)) from None


def load_token(config: Config, environ: Mapping[str, str] | None = None) -> str | None:
    """The HTTP bearer token: ``QGA_MCP_TOKEN``, else the content of ``token-file``
    (when it exists: else :func:`generate_token` makes one there).

    Raises:
        ConfigError: the token file cannot be read or is empty.
    """
    environ = os.environ if environ is None else environ
    token = environ.get(ENV_PREFIX + "TOKEN")
    if token is None and config.token_file is not None and os.path.exists(config.token_file):
        try:
            with open(config.token_file, encoding="utf-8") as file:
                token = file.read()
        except OSError as exc:
            raise ConfigError(
                f"cannot read the token file {config.token_file}: {exc.strerror}"
            ) from exc
    if token is None:
        return None
    token = token.strip()
    if not token:
        raise ConfigError("the bearer token is empty: put a long random string in it")
    return token


def generate_token(config: Config) -> tuple[str, str]:
    """A new random bearer token, written to a file only this user can read: (token, path).

    The file is ``token-file`` when that is set (and did not exist), else a new file in
    ``$XDG_RUNTIME_DIR`` (or the temporary directory).

    Raises:
        ConfigError: the file cannot be created.
    """
    token = secrets.token_urlsafe(32)
    try:
        if config.token_file is not None:
            fd = os.open(config.token_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            path = config.token_file
        else:
            where = os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()
            fd, path = tempfile.mkstemp(prefix="qga-mcp-token-", dir=where)  # mode 0600
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(token + "\n")
    except OSError as exc:
        raise ConfigError(f"cannot create a token file: {exc}") from exc
    return token, path
