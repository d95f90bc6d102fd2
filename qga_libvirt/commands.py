"""Every QGA command, declared once.

A declaration is a function in :class:`Commands` decorated with :func:`command`: its
name is the Python method, its signature the typed arguments, its body maps them to the
wire arguments, its docstring the one-line doc; the decorator holds the wire name, the
reply type and the facts (replies or not, safe while frozen, since, platforms). The typed
methods of :class:`~qga_libvirt.GuestAgent`, the generated docs, the CLI and the MCP tools
all derive from these declarations: a wire name appears here and nowhere else.

Conventions the declarations follow:

- Bytes are bytes: arguments are base64-encoded here, replies decoded by the models.
- A reply object that only wraps one value is unwrapped (``unwrap=``): guest-exec gives
  the pid, guest-get-host-name the name, guest-ssh-get-authorized-keys the keys,
  guest-get-memory-block-info the size, guest-fstrim the list of results.
- Optional arguments are None by default and then not sent, so the agent's own default
  applies.
"""

from __future__ import annotations

import enum
import importlib
import inspect
import os
import sys
import types
import typing
from collections.abc import Callable, Coroutine, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, Protocol, TypeVar, overload

from .enums import CaptureOutputMode, FsfreezeStatus, SeekWhence, ShutdownMode
from .errors import InvalidArgumentError, ProtocolError
from .protocol import Base64Text

if TYPE_CHECKING:
    from pydantic import TypeAdapter

    from . import models

__all__ = [
    "Arguments",
    "Command",
    "Commands",
    "Facts",
    "all_commands",
    "by_method_name",
    "by_wire_name",
    "command",
    "known_wire_names",
    "load_user_commands",
    "user_commands",
]

P = ParamSpec("P")
R = TypeVar("R")

Arguments = dict[str, Any] | None


_builtins_declared = False
"""True once :class:`Commands` exists: declarations after it are the users'."""
_BY_WIRE: dict[str, Command[Any, Any]] = {}
_USER_BY_WIRE: dict[str, Command[Any, Any]] = {}


class _Invoker(Protocol):
    def _invoke(self, command: Command[Any, R], arguments: Arguments) -> R: ...


class _AsyncInvoker(Protocol):
    def _invoke(self, command: Command[Any, R], arguments: Arguments) -> Coroutine[Any, Any, R]: ...


@dataclass(frozen=True)
class Facts:
    """What is known about a command besides its signature.

    Attributes:
        since: the QEMU version that added the command.
        replies: False for the commands that send no reply on success (guest-shutdown,
            guest-suspend-*): the client does not wait for one.
        frozen_safe: the agent still runs it while the filesystems are frozen (ping,
            info, sync, sync-delimited, fsfreeze-status, fsfreeze-thaw).
        platforms: the guest operating systems whose agent has it: ``"all"``, or e.g.
            ``"Linux"``, ``"Linux, Windows"``.
        changes_guest: running it can change the guest in a way that outlives the call:
            files (file-open may create or truncate, file-write), the clock, power state,
            users and their keys, vCPUs and memory, frozen filesystems, trimmed blocks, or
            anything at all (exec). Reading commands, and file-close/read/seek/flush and
            exec-status (which only touch the agent's own handles), do not.
    """

    since: str
    replies: bool = True
    frozen_safe: bool = False
    platforms: str = "all"
    changes_guest: bool = False
    newer_arguments: tuple[tuple[str, str, str], ...] = ()
    """``(wire argument, since, what)``: argument forms newer than the command itself,
    e.g. ``("capture-output", "8.0", "capture-output modes")``."""

    def _platforms(self) -> list[tuple[str, str]]:
        """``[(OS, since)]`` from ``platforms`` (``"Linux (9.1), Windows (11.0)"``)."""
        found = []
        for part in self.platforms.split(","):
            name, _, since = part.strip().partition(" (")
            found.append((name, since.rstrip(")") or self.since))
        return found

    @property
    def platform_names(self) -> str | None:
        """The operating systems that have the command, for a message; None for all."""
        if self.platforms == "all":
            return None
        names = [name for name, _ in self._platforms()]
        return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]

    def since_on(self, os: str) -> str | None:
        """The first agent version with the command on guest OS ``os`` (``"Linux"``,
        ``"Windows"``, ``"FreeBSD"``), or None when that OS's agent does not have it."""
        if self.platforms == "all":
            return self.since
        for name, since in self._platforms():
            if name == os or (name == "POSIX" and os != "Windows"):
                return since
        return None


def _import_models() -> None:
    """Bind :mod:`qga_libvirt.models` here, for the declarations that name its types
    (``lambda: models.OsInfo``, ``Sequence[models.LogicalProcessor]``).

    Not imported with this module: pydantic and the models cost ~100 ms, and most
    processes parse one reply or none (a ping).
    """
    global models
    from . import models


class Command(Generic[P, R]):
    """One declared command; on an agent object it is the typed method."""

    def __init__(
        self,
        wire: str,
        build: Callable[P, Arguments],
        reply: Any,
        facts: Facts,
        unwrap: str | None = None,
    ) -> None:
        self.wire = wire
        self.build = build
        self._reply = reply
        self.facts = facts
        self.unwrap = unwrap
        self.method = build.__name__
        self.doc = inspect.cleandoc(build.__doc__ or "")
        self._adapter: TypeAdapter[R] | None = None

    @property
    def returns(self) -> bool:
        """Whether the call returns the reply's value (a reply type is declared)."""
        return self._reply is not None

    @property
    def reply(self) -> Any:
        """The reply type, None when the value is ignored.

        A declaration may give it as a function that returns it (``lambda: models.OsInfo``):
        it is called here, the first time the type is needed, so that importing the
        declarations does not import the models (and pydantic, ~100 ms).
        """
        if isinstance(self._reply, types.FunctionType):
            _import_models()
            self._reply = self._reply()
        return self._reply

    def argument_types(self) -> dict[str, Any]:
        """The declaration's parameter types, resolved (:func:`typing.get_type_hints`)."""
        try:
            return typing.get_type_hints(self.build)
        except NameError:  # it names the models, imported on first use
            _import_models()
            return typing.get_type_hints(self.build)

    @property
    def summary(self) -> str:
        """The first line of the doc."""
        return self.doc.splitlines()[0] if self.doc else ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.method = name
        if _builtins_declared:  # a user's declaration, in a class of their own
            builtin = _BY_WIRE.get(self.wire)
            if builtin is not None:
                raise ValueError(f"{self.wire} is already declared as Commands.{builtin.method}")
            _USER_BY_WIRE[self.wire] = self

    def __repr__(self) -> str:
        return f"<Command {self.wire} -> {self.method}()>"

    @overload
    def __get__(self, obj: None, owner: type) -> Command[P, R]: ...
    @overload
    def __get__(self, obj: _Invoker, owner: type) -> Callable[P, R]: ...
    @overload
    def __get__(self, obj: _AsyncInvoker, owner: type) -> Callable[P, Coroutine[Any, Any, R]]: ...
    def __get__(
        self, obj: _Invoker | _AsyncInvoker | None, owner: type
    ) -> Command[P, R] | Callable[P, R] | Callable[P, Coroutine[Any, Any, R]]:
        if obj is None:
            return self

        def method(*args: P.args, **kwargs: P.kwargs) -> Any:
            # The blocking client returns the result, the asyncio client an awaitable.
            return obj._invoke(self, self.arguments(*args, **kwargs))

        method.__name__ = self.method
        method.__doc__ = self.doc
        return method

    def arguments(self, *args: P.args, **kwargs: P.kwargs) -> Arguments:
        """The wire arguments for a call: None values dropped, enums and models encoded."""
        built = self.build(*args, **kwargs)
        if built is None:
            return None
        encoded = {key: _encode(value) for key, value in built.items() if value is not None}
        return encoded or None

    def parse(self, value: Any) -> R:
        """Validate the reply's "return" value into the declared type.

        Raises:
            ProtocolError: the reply breaks the schema; the reply is attached.
        """
        if not self.returns:
            return None  # type: ignore[return-value]
        inner = value
        if self.unwrap is not None:
            if not isinstance(value, dict) or self.unwrap not in value:
                raise self._mismatch(value, f"expected an object with {self.unwrap!r}", ())
            inner = value[self.unwrap]
        from pydantic import TypeAdapter, ValidationError

        if self._adapter is None:
            self._adapter = TypeAdapter(self.reply)
        try:
            return self._adapter.validate_python(inner)
        except ValidationError as exc:
            first = exc.errors(include_url=False)[0]
            where = (self.unwrap, *first["loc"]) if self.unwrap else first["loc"]
            raise self._mismatch(value, first["msg"], where) from exc

    def _mismatch(self, reply: Any, what: str, where: tuple[str | int, ...]) -> ProtocolError:
        return ProtocolError(
            f"the reply to {self.wire} does not match its schema: "
            f"{what} at {'.'.join(map(str, where)) or 'top level'}",
            reply=reply,
            command=self.wire,
        )


def _encode(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    pydantic = sys.modules.get("pydantic")  # a model means pydantic is imported: not before
    if pydantic is not None and isinstance(value, pydantic.BaseModel):
        return value.model_dump(by_alias=True, exclude_none=True, mode="json")
    if isinstance(value, list | tuple):
        return [_encode(item) for item in value]
    if isinstance(value, Mapping):
        return {key: _encode(item) for key, item in value.items() if item is not None}
    return value


@overload
def command(
    wire: str, reply: None, facts: Facts
) -> Callable[[Callable[P, Arguments]], Command[P, None]]: ...
@overload
def command(
    wire: str, reply: type[R], facts: Facts, *, unwrap: str | None = None
) -> Callable[[Callable[P, Arguments]], Command[P, R]]: ...
@overload
def command(
    wire: str, reply: Callable[[], type[R]], facts: Facts, *, unwrap: str | None = None
) -> Callable[[Callable[P, Arguments]], Command[P, R]]: ...
def command(
    wire: str, reply: Any, facts: Facts, *, unwrap: str | None = None
) -> Callable[[Callable[P, Arguments]], Command[P, Any]]:
    """Declare a command: wire name, reply type (None when the value is ignored), facts.

    The reply type may be given as a function that returns it (``lambda: MyModel``),
    called when the first reply is parsed: a module of declarations then need not
    import its models (and pydantic) before a call needs them.

    ``unwrap`` names the one member of a reply object whose value is the result (for the
    replies that only wrap one value); the reply type is then that member's type.
    """

    def declare(build: Callable[P, Arguments]) -> Command[P, Any]:
        return Command(wire, build, reply, facts, unwrap)

    return declare


def b64(data: bytes) -> Base64Text:
    """Bytes as the agent's base64 text (sent unscanned, see :class:`Base64Text`)."""
    return Base64Text.of(data)


class Commands:
    """The typed QGA commands. :class:`~qga_libvirt.GuestAgent` inherits them.

    Every method raises what :meth:`GuestAgent.call <qga_libvirt.GuestAgent.call>` raises:
    :class:`~qga_libvirt.AgentCommandError` when the agent answers with an error
    (:class:`~qga_libvirt.CommandDisabledError`, :class:`~qga_libvirt.GuestFrozenError`
    and :class:`~qga_libvirt.CommandNotFoundError` when it refuses the command), another
    :class:`~qga_libvirt.GuestAgentError` when the agent cannot be reached or does not
    answer in time, and :class:`~qga_libvirt.ProtocolError` (with ``.reply``) when the
    reply breaks the schema.
    """

    def _invoke(self, command: Command[Any, R], arguments: Arguments) -> R:
        raise NotImplementedError

    # --- the agent itself -------------------------------------------------------------

    @command("guest-sync-delimited", int, Facts("1.1", frozen_safe=True))
    def sync_delimited(id: int) -> Arguments:
        """Echo ``id`` after a 0xFF sentinel: resynchronise a stream (done for you)."""
        return {"id": id}

    @command("guest-sync", int, Facts("0.15", frozen_safe=True))
    def sync(id: int) -> Arguments:
        """Echo ``id``: check that replies match requests (superseded by sync-delimited)."""
        return {"id": id}

    @command("guest-ping", None, Facts("0.15", frozen_safe=True))
    def ping() -> Arguments:
        """Check that the agent answers: nothing comes back, or an error when it does not."""
        return None

    @command("guest-info", lambda: models.AgentInfo, Facts("0.15", frozen_safe=True))
    def info() -> Arguments:
        """The agent's version and every command it knows, with enabled/success-response."""
        return None

    # --- time -------------------------------------------------------------------------

    @command("guest-get-time", int, Facts("1.5"))
    def get_time() -> Arguments:
        """The guest's clock, in nanoseconds since the epoch (UTC)."""
        return None

    @command("guest-set-time", None, Facts("1.5", changes_guest=True))
    def set_time(time: int | None = None) -> Arguments:
        """Set the guest's clock to ``time`` (ns since the epoch), then its RTC from it.

        Without ``time`` the clock is set from the RTC, which Windows guests do not
        support: pass a value for them.
        """
        return {"time": time}

    # --- power ------------------------------------------------------------------------

    @command("guest-shutdown", None, Facts("0.15", replies=False, changes_guest=True))
    def shutdown(mode: ShutdownMode | None = None) -> Arguments:
        """Halt, power down (the agent's default) or reboot the guest.

        No reply comes on success: this returns once the agent accepted the request,
        which does not mean the guest has stopped yet.
        """
        return {"mode": mode}

    @command(
        "guest-suspend-disk",
        None,
        Facts("1.1", replies=False, platforms="Linux, Windows", changes_guest=True),
    )
    def suspend_disk() -> Arguments:
        """Suspend the guest to disk (hibernate); no reply comes on success."""
        return None

    @command(
        "guest-suspend-ram",
        None,
        Facts("1.1", replies=False, platforms="Linux, Windows", changes_guest=True),
    )
    def suspend_ram() -> Arguments:
        """Suspend the guest to RAM; no reply comes on success.

        QEMU must be able to wake the guest (query-current-machine reports
        wakeup-suspend-support), or it stays suspended until powered off.
        """
        return None

    @command(
        "guest-suspend-hybrid",
        None,
        Facts("1.1", replies=False, platforms="Linux", changes_guest=True),
    )
    def suspend_hybrid() -> Arguments:
        """Save the guest's state to disk and suspend it to RAM; no reply on success."""
        return None

    # --- files ------------------------------------------------------------------------

    @command("guest-file-open", int, Facts("0.15", changes_guest=True))
    def file_open(path: str, mode: str | None = None) -> Arguments:
        """Open a file in the guest and return its handle; ``mode`` as fopen(3), default "r".

        Modes "w" and "a" create the file, "w" truncates it.
        """
        return {"path": path, "mode": mode}

    @command("guest-file-close", None, Facts("0.15"))
    def file_close(handle: int) -> Arguments:
        """Close a file opened with file_open."""
        return {"handle": handle}

    @command("guest-file-read", lambda: models.FileRead, Facts("0.15"))
    def file_read(handle: int, count: int | None = None) -> Arguments:
        """Read up to ``count`` bytes (agent default 4096, at most 48 MiB) from a file."""
        return {"handle": handle, "count": count}

    @command("guest-file-write", lambda: models.FileWrite, Facts("0.15", changes_guest=True))
    def file_write(handle: int, data: bytes, count: int | None = None) -> Arguments:
        """Write ``data`` (or its first ``count`` bytes) to a file."""
        return {"handle": handle, "buf-b64": b64(data), "count": count}

    @command("guest-file-seek", lambda: models.FileSeek, Facts("0.15"))
    def file_seek(handle: int, offset: int, whence: SeekWhence | int = SeekWhence.SET) -> Arguments:
        """Move a file's position, as fseek(3), and return the new position.

        ``whence`` is set, cur or end (:class:`~qga_libvirt.models.SeekWhence`), or the
        wire's historical integer (0 set, 1 cur, 2 end; symbolic names need agent 2.6).
        """
        return {"handle": handle, "offset": offset, "whence": whence}

    @command("guest-file-flush", None, Facts("0.15"))
    def file_flush(handle: int) -> Arguments:
        """Flush a file's buffered writes to the guest kernel."""
        return {"handle": handle}

    # --- filesystems and disks --------------------------------------------------------

    @command(
        "guest-fsfreeze-status",
        FsfreezeStatus,
        Facts("0.15", frozen_safe=True, platforms="Linux, FreeBSD, Windows"),
    )
    def fsfreeze_status() -> Arguments:
        """Whether the guest's filesystems are frozen (as far as the agent knows)."""
        return None

    @command(
        "guest-fsfreeze-freeze",
        int,
        Facts("0.15", platforms="Linux, FreeBSD, Windows", changes_guest=True),
    )
    def fsfreeze_freeze() -> Arguments:
        """Sync and freeze every local filesystem; returns how many are frozen.

        Until :meth:`fsfreeze_thaw`, the agent refuses every command but the frozen-safe
        ones (:class:`~qga_libvirt.GuestFrozenError`); Windows thaws by itself after 10 s.
        """
        return None

    @command(
        "guest-fsfreeze-freeze-list",
        int,
        Facts("2.2", platforms="Linux, FreeBSD, Windows", changes_guest=True),
    )
    def fsfreeze_freeze_list(mountpoints: Sequence[str] | None = None) -> Arguments:
        """Sync and freeze the filesystems at ``mountpoints`` (default all); returns how many.

        Mount points the guest does not have are ignored.
        """
        return {"mountpoints": None if mountpoints is None else list(mountpoints)}

    @command(
        "guest-fsfreeze-thaw",
        int,
        Facts("0.15", frozen_safe=True, platforms="Linux, FreeBSD, Windows", changes_guest=True),
    )
    def fsfreeze_thaw() -> Arguments:
        """Thaw the frozen filesystems; returns how many were thawed."""
        return None

    @command(
        "guest-fstrim",
        lambda: list[models.FstrimResult],
        Facts("1.2", platforms="Linux, Windows", changes_guest=True),
        unwrap="paths",
    )
    def fstrim(minimum: int | None = None) -> Arguments:
        """Discard unused blocks of every filesystem; one result per mount point.

        ``minimum`` (bytes) skips free ranges smaller than that, a hint the guest may
        ignore. Agents before 2.4 reply nothing, which is reported as a broken reply
        (:class:`~qga_libvirt.ProtocolError`).
        """
        return {"minimum": minimum}

    @command(
        "guest-get-fsinfo",
        lambda: list[models.FilesystemInfo],
        Facts("2.2", platforms="Linux, Windows"),
    )
    def get_fsinfo() -> Arguments:
        """The mounted filesystems, with their sizes and the disks they lie on."""
        return None

    @command(
        "guest-get-disks", lambda: list[models.DiskInfo], Facts("5.2", platforms="Linux, Windows")
    )
    def get_disks() -> Arguments:
        """The guest's disks and partitions, with their addresses and SMART data."""
        return None

    @command(
        "guest-get-diskstats", lambda: list[models.DiskStatsInfo], Facts("7.1", platforms="Linux")
    )
    def get_diskstats() -> Arguments:
        """I/O counters of every block device."""
        return None

    # --- processes --------------------------------------------------------------------

    @command(
        "guest-exec",
        int,
        Facts(
            "2.5",
            changes_guest=True,
            newer_arguments=(("capture-output", "8.0", "capture-output modes"),),
        ),
        unwrap="pid",
    )
    def exec(
        path: str,
        args: Sequence[str] | None = None,
        env: Mapping[str, str] | None = None,
        input: bytes | None = None,
        capture_output: bool | CaptureOutputMode = False,
    ) -> Arguments:
        """Start a program in the guest and return its pid; poll it with exec_status.

        ``env`` replaces the whole environment. ``input`` is fed to stdin. With
        ``capture_output``, stdout and stderr are kept (up to 16 MiB each) and come back
        in the final status (:class:`~qga_libvirt.models.ExecStatus`); a mode
        (:class:`~qga_libvirt.models.CaptureOutputMode`) picks the streams (agent 8.0+).
        With "stdout" or "stderr" alone, qemu-ga 10.0 may never report the process as
        exited (measured with 10.0.2: every time in a guest, now and then on a host):
        prefer "separated".
        """
        return {
            "path": path,
            "arg": None if args is None else list(args),
            "env": None if env is None else [f"{key}={value}" for key, value in env.items()],
            "input-data": None if input is None else b64(input),
            "capture-output": capture_output or None,
        }

    @command("guest-exec-status", lambda: models.ExecStatus, Facts("2.5"))
    def exec_status(pid: int) -> Arguments:
        """Whether a guest-exec process exited, with its code and captured output.

        The agent forgets the process once it reported it exited: the output comes once.
        """
        return {"pid": pid}

    # --- the system -------------------------------------------------------------------

    @command("guest-get-osinfo", lambda: models.OsInfo, Facts("2.10"))
    def get_osinfo() -> Arguments:
        """The guest's operating system: kernel (uname) and distribution (os-release)."""
        return None

    @command("guest-get-host-name", str, Facts("2.10"), unwrap="host-name")
    def get_host_name() -> Arguments:
        """The guest's host name (not necessarily fully qualified)."""
        return None

    @command("guest-get-timezone", lambda: models.Timezone, Facts("2.10"))
    def get_timezone() -> Arguments:
        """The guest's timezone name and its offset from UTC."""
        return None

    @command("guest-get-users", lambda: list[models.User], Facts("2.10"))
    def get_users() -> Arguments:
        """The users logged in to the guest, each once, with their earliest login time."""
        return None

    @command("guest-get-load", lambda: models.LoadAverage, Facts("10.0"))
    def get_load() -> Arguments:
        """The guest's 1, 5 and 15 minute load averages."""
        return None

    @command("guest-get-cpustats", lambda: list[models.CpuStats], Facts("7.1", platforms="Linux"))
    def get_cpustats() -> Arguments:
        """Time spent by each CPU in each state, in milliseconds."""
        return None

    @command(
        "guest-get-devices", lambda: list[models.DeviceInfo], Facts("5.2", platforms="Windows")
    )
    def get_devices() -> Arguments:
        """The guest's devices and their drivers."""
        return None

    # --- network ----------------------------------------------------------------------

    @command("guest-network-get-interfaces", lambda: list[models.NetworkInterface], Facts("1.1"))
    def network_get_interfaces() -> Arguments:
        """The guest's network interfaces, with their addresses and counters."""
        return None

    @command(
        "guest-network-get-route",
        lambda: list[models.NetworkRoute],
        Facts("9.1", platforms="Linux (9.1), Windows (11.0)"),
    )
    def network_get_route() -> Arguments:
        """The guest's routing table."""
        return None

    # --- virtual hardware -------------------------------------------------------------

    @command(
        "guest-get-vcpus",
        lambda: list[models.LogicalProcessor],
        Facts("1.5", platforms="Linux, Windows"),
    )
    def get_vcpus() -> Arguments:
        """The guest's logical processors, online or not, and whether they can go offline."""
        return None

    @command("guest-set-vcpus", int, Facts("1.5", platforms="Linux", changes_guest=True))
    def set_vcpus(vcpus: Sequence[models.LogicalProcessor]) -> Arguments:
        """Bring vCPUs online or offline, in order; returns how many were processed.

        A result below the number of vCPUs given means the next one failed (send again
        without the processed ones to see why); whether one can go offline is not sent.
        """
        return {"vcpus": [{"logical-id": v.logical_id, "online": v.online} for v in vcpus]}

    @command(
        "guest-get-memory-blocks", lambda: list[models.MemoryBlock], Facts("2.3", platforms="Linux")
    )
    def get_memory_blocks() -> Arguments:
        """The guest's memory blocks, online or not, and whether they can go offline."""
        return None

    @command(
        "guest-set-memory-blocks",
        lambda: list[models.MemoryBlockResponse],
        Facts("2.3", platforms="Linux", changes_guest=True),
    )
    def set_memory_blocks(blocks: Sequence[models.MemoryBlock]) -> Arguments:
        """Bring memory blocks online or offline; one response per block, in order.

        Whether one can go offline is not sent. An empty list back means nothing was
        changed.
        """
        return {"mem-blks": [{"phys-index": b.phys_index, "online": b.online} for b in blocks]}

    @command("guest-get-memory-block-info", int, Facts("2.3", platforms="Linux"), unwrap="size")
    def get_memory_block_info() -> Arguments:
        """The size in bytes of one memory block (the unit of set_memory_blocks)."""
        return None

    # --- users ------------------------------------------------------------------------

    @command(
        "guest-set-user-password",
        None,
        Facts("2.3", platforms="Linux, FreeBSD, Windows", changes_guest=True),
    )
    def set_user_password(username: str, password: str, crypted: bool = False) -> Arguments:
        """Set a user's password; ``crypted`` when it is already a crypt(3) hash.

        The password is sent base64-encoded, as the agent wants it, and never appears in
        an error message. A password that is not valid Unicode text is refused before
        anything is sent.
        """
        try:
            encoded = password.encode()
        except UnicodeEncodeError:
            # Not chained: the UnicodeEncodeError's repr holds the password.
            raise InvalidArgumentError(
                "guest-set-user-password: argument password contains a lone surrogate (it is "
                "not valid Unicode text), which cannot be sent; nothing was sent",
                command="guest-set-user-password",
                argument="argument password",
            ) from None
        return {"username": username, "password": b64(encoded), "crypted": crypted}

    @command(
        "guest-ssh-get-authorized-keys",
        list[str],
        Facts("5.2", platforms="POSIX, Windows (9.1)"),
        unwrap="keys",
    )
    def ssh_get_authorized_keys(username: str) -> Arguments:
        """The public keys in a user's ~/.ssh/authorized_keys."""
        return {"username": username}

    @command(
        "guest-ssh-add-authorized-keys",
        None,
        Facts("5.2", platforms="POSIX, Windows (9.1)", changes_guest=True),
    )
    def ssh_add_authorized_keys(
        username: str, keys: Sequence[str], reset: bool = False
    ) -> Arguments:
        """Add public keys to a user's authorized_keys; ``reset`` replaces its content."""
        return {"username": username, "keys": list(keys), "reset": reset or None}

    @command(
        "guest-ssh-remove-authorized-keys",
        None,
        Facts("5.2", platforms="POSIX, Windows (9.1)", changes_guest=True),
    )
    def ssh_remove_authorized_keys(username: str, keys: Sequence[str]) -> Arguments:
        """Remove public keys from a user's authorized_keys (absent ones are no error)."""
        return {"username": username, "keys": list(keys)}


def all_commands() -> Iterator[Command[Any, Any]]:
    """Every command this library declares (:class:`Commands`), in declaration order."""
    for value in vars(Commands).values():
        if isinstance(value, Command):
            yield value


def user_commands() -> list[Command[Any, Any]]:
    """The commands users declared in classes of their own, in declaration order."""
    return list(_USER_BY_WIRE.values())


USER_COMMANDS_ENV = "QGA_COMMANDS"
"""Comma-separated modules that declare users' commands, for ``qga`` and ``qga-mcp``."""


def load_user_commands(modules: str | None = None) -> list[Command[Any, Any]]:
    """Import the modules that declare users' commands; return every user command.

    ``modules`` is a comma-separated list of importable module names, by default
    ``$QGA_COMMANDS``: how ``qga`` and ``qga-mcp`` learn commands a library user declared
    (importing the module runs its declarations).

    Raises:
        ImportError: a module cannot be imported (the message names it).
    """
    names = os.environ.get(USER_COMMANDS_ENV, "") if modules is None else modules
    for name in filter(None, (part.strip() for part in names.split(","))):
        try:
            importlib.import_module(name)
        except Exception as exc:
            raise ImportError(
                f"{USER_COMMANDS_ENV} names {name}, which cannot be imported: {exc}"
            ) from exc
    return user_commands()


def known_wire_names() -> list[str]:
    """Every declared wire name: this library's and the users'."""
    return [*_BY_WIRE, *_USER_BY_WIRE]


_BY_WIRE.update((c.wire, c) for c in all_commands())
_BY_METHOD: dict[str, Command[Any, Any]] = {c.method: c for c in all_commands()}
_builtins_declared = True


def by_wire_name(wire: str) -> Command[Any, Any] | None:
    """The declaration for a wire name (this library's or a user's), or None."""
    return _BY_WIRE.get(wire) or _USER_BY_WIRE.get(wire)


def by_method_name(method: str) -> Command[Any, Any] | None:
    """The declaration for a method name (``get_osinfo``), or None."""
    return _BY_METHOD.get(method)
