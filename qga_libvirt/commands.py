"""Every QGA command, declared once.

A declaration is a function in :class:`Commands` decorated with :func:`command`: its
name is the Python method, its signature the typed arguments, its body maps them to the
wire arguments, its docstring the one-line doc; the decorator holds the wire name, the
reply type and the facts (replies or not, safe while frozen, since, platforms). The typed
methods of :class:`~qga_libvirt.GuestAgent`, the generated docs, the CLI and the MCP tools
all derive from these declarations: a wire name appears here and nowhere else.
"""

from __future__ import annotations

import base64
import enum
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Generic, ParamSpec, Protocol, TypeVar, overload

from pydantic import BaseModel, TypeAdapter, ValidationError

from .errors import ProtocolError
from .models import AgentInfo

__all__ = ["Arguments", "Command", "Commands", "all_commands", "by_wire_name", "command"]

P = ParamSpec("P")
R = TypeVar("R")
R_co = TypeVar("R_co", covariant=True)

Arguments = dict[str, Any] | None


class _Invoker(Protocol):
    def _invoke(self, command: Command[Any, R], arguments: Arguments) -> R: ...


@dataclass(frozen=True)
class Facts:
    """What is known about a command besides its signature."""

    since: str
    replies: bool = True
    frozen_safe: bool = False
    platforms: str = "all"
    changes_guest: bool = False


class Command(Generic[P, R]):
    """One declared command; on an agent object it is the typed method."""

    def __init__(
        self,
        wire: str,
        build: Callable[P, Arguments],
        reply: Any,
        facts: Facts,
    ) -> None:
        self.wire = wire
        self.build = build
        self.reply = reply
        self.facts = facts
        self.method = build.__name__
        self.doc = (build.__doc__ or "").strip()
        self._adapter: TypeAdapter[R] | None = None

    @property
    def summary(self) -> str:
        """The first line of the doc."""
        return self.doc.splitlines()[0] if self.doc else ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.method = name

    def __repr__(self) -> str:
        return f"<Command {self.wire} -> {self.method}()>"

    @overload
    def __get__(self, obj: None, owner: type) -> Command[P, R]: ...
    @overload
    def __get__(self, obj: _Invoker, owner: type) -> Callable[P, R]: ...
    def __get__(self, obj: _Invoker | None, owner: type) -> Command[P, R] | Callable[P, R]:
        if obj is None:
            return self

        def method(*args: P.args, **kwargs: P.kwargs) -> R:
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
        if self.reply is None:
            return None  # type: ignore[return-value]
        if self._adapter is None:
            self._adapter = TypeAdapter(self.reply)
        try:
            return self._adapter.validate_python(value)
        except ValidationError as exc:
            raise ProtocolError(
                f"the reply to {self.wire} does not match its schema: "
                f"{exc.errors(include_url=False)[0]['msg']} "
                f"at {'.'.join(map(str, exc.errors()[0]['loc'])) or 'top level'}",
                reply=value,
                command=self.wire,
            ) from exc


def _encode(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, BaseModel):
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
    wire: str, reply: type[R], facts: Facts
) -> Callable[[Callable[P, Arguments]], Command[P, R]]: ...
def command(
    wire: str, reply: Any, facts: Facts
) -> Callable[[Callable[P, Arguments]], Command[P, Any]]:
    """Declare a command: wire name, reply type (None when the value is ignored), facts."""

    def declare(build: Callable[P, Arguments]) -> Command[P, Any]:
        return Command(wire, build, reply, facts)

    return declare


def b64(data: bytes) -> str:
    """Bytes as the agent's base64 text."""
    return base64.b64encode(data).decode("ascii")


class Commands:
    """The typed QGA commands. :class:`~qga_libvirt.GuestAgent` inherits them."""

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
        """Check that the agent answers; returns nothing, raises if it does not."""
        return None

    @command("guest-info", AgentInfo, Facts("0.15", frozen_safe=True))
    def info() -> Arguments:
        """The agent's version and every command it knows, with enabled/success-response."""
        return None


def all_commands() -> Iterator[Command[Any, Any]]:
    """Every declared command, in declaration order."""
    for value in vars(Commands).values():
        if isinstance(value, Command):
            yield value


_BY_WIRE: dict[str, Command[Any, Any]] = {c.wire: c for c in all_commands()}


def by_wire_name(wire: str) -> Command[Any, Any] | None:
    """The declaration for a wire name, or None for a command not declared here."""
    return _BY_WIRE.get(wire)
