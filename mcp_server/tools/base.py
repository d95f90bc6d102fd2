"""What every tool shares: the result models and their rendering (fenced guest data),
the declaration of a tool and the catalogue, and the reply budget with its paging helpers."""

from __future__ import annotations

import inspect
import json
import re
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Annotated, ClassVar, TypeVar, get_type_hints

from mcp.types import ToolAnnotations
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
)

from ..config import Group
from ..messages import GUEST_NOTE, NO_ARGUMENTS
from ..policy import PolicyError, fence, utf8_prefix
from ..runtime import Call

DomainArg = Annotated[
    str,
    Field(
        min_length=1,
        max_length=300,
        description="a domain as list_domains names it",
    ),
]


# --- results --------------------------------------------------------------------------


class Result(BaseModel):
    """Base of every tool's structured result; :meth:`render` is its text block."""

    model_config = ConfigDict(frozen=True)

    from_guest: ClassVar[bool] = True
    """Whether the result carries data from the guest (then it is fenced as such)."""

    def summary(self) -> str | None:
        """One line the server vouches for, shown before the data."""
        return None

    def guest_texts(self) -> dict[str, str]:
        """Guest text fields shown raw in their own fence rather than inside the JSON."""
        return {}

    def render(self) -> str:
        """The text content: summary, then the JSON (and guest texts) fenced as guest data."""
        texts = self.guest_texts()
        data = self.model_dump_json(by_alias=True, exclude=set(texts), exclude_none=True)
        summary = self.summary()
        parts = [summary] if summary else []
        if not self.from_guest:
            return "\n".join([*parts, data])
        parts += [GUEST_NOTE, fence("guest-data", data)]
        parts += [fence(f"guest-{name}", text) for name, text in texts.items() if text]
        return "\n".join(parts)


class DomainResult(Result):
    """A result about one domain."""

    domain: str = Field(description="the domain, as tools address it")


R = TypeVar("R", bound=Result)


NO_LESS = f"{NO_ARGUMENTS}: ask the operator to raise it"


def checked(call: Call, result: R, hint: str = NO_LESS) -> R:
    """``result``, unless its JSON is over the output cap (a hostile guest can send MBs)."""
    size = len(result.model_dump_json(by_alias=True, exclude_none=True))
    call.policy.check_output(f"the reply from {call.domain}", size, hint)
    return result


# --- declaring tools ------------------------------------------------------------------


@dataclass(frozen=True)
class ToolSpec:
    """A tool as the server registers it."""

    name: str
    body: Callable[..., Result]
    output: type[Result]
    group: Group | None
    annotations: ToolAnnotations
    description: str
    takes_domain: bool = True
    waits: bool = False
    """Long waits: the server sends heartbeat progress while the body runs."""

    def parameters(self) -> list[inspect.Parameter]:
        """The tool's parameters: ``domain`` (when it takes one), then the body's."""
        params = list(inspect.signature(self.body, eval_str=True).parameters.values())[1:]
        if self.takes_domain:
            kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
            params.insert(0, inspect.Parameter("domain", kind, annotation=DomainArg))
        return params


CATALOGUE: list[ToolSpec] = []
"""Every tool, in the order tools/list shows them."""

F = TypeVar("F", bound=Callable[..., Result])


def tool(
    group: Group | None,
    *,
    title: str,
    read_only: bool,
    destructive: bool,
    idempotent: bool,
    open_world: bool = False,
    takes_domain: bool = True,
    waits: bool = False,
    description: str | None = None,
) -> Callable[[F], F]:
    """Declare a tool of ``group`` (None: the read-only inventory, always listed).

    The description is the body's docstring unless ``description`` is given.
    """

    def declare(body: F) -> F:
        CATALOGUE.append(
            ToolSpec(
                name=body.__name__,
                body=body,
                output=get_type_hints(body)["return"],
                group=group,
                annotations=ToolAnnotations(
                    title=title,
                    read_only_hint=read_only,
                    destructive_hint=destructive,
                    idempotent_hint=idempotent,
                    open_world_hint=open_world,
                ),
                description=description or inspect.cleandoc(body.__doc__ or ""),
                takes_domain=takes_domain,
                waits=waits,
            )
        )
        return body

    return declare


def catalogue(enabled: Collection[Group]) -> list[ToolSpec]:
    """The tools to list: the inventory and the enabled groups' tools."""
    return [spec for spec in CATALOGUE if spec.group is None or spec.group in enabled]


# --- paging guest text -----------------------------------------------------------------

GrepArg = Annotated[
    str | None,
    Field(
        min_length=1,
        max_length=200,
        description="only lines matching this regular expression (Python re syntax, "
        "evaluated by the server)",
    ),
]


def grep_pattern(grep: str | None) -> re.Pattern[str] | None:
    if grep is None:
        return None
    try:
        return re.compile(grep)
    except re.error as exc:
        raise PolicyError(
            f"grep={json.dumps(grep)} is not a valid regular expression: {exc}"
        ) from None


def grep_lines(text: str, pattern: re.Pattern[str]) -> str:
    return "".join(line for line in text.splitlines(keepends=True) if pattern.search(line))


REPLY_OVERHEAD = 2048
"""Bytes of a reply kept for what is not the guest's big texts: summary, fences, the
other fields, in the text and in the structured copy."""


def share(call: Call, fields: int) -> int:
    """Bytes each of ``fields`` big guest texts may take in a reply, JSON-escaped: the
    text and the structured copy both carry them, and both count against
    ``max-output-bytes``."""
    return max(64, (call.policy.max_output_bytes - REPLY_OVERHEAD) // (2 * fields))


def json_size(text: str) -> int:
    """Bytes ``text`` takes inside a JSON string (escapes counted)."""
    return len(json.dumps(text, ensure_ascii=False).encode()) - 2


def fitting(data: bytes, cap: int, tail: bool = False) -> int:
    """How many bytes of ``data`` (from its start, or its end with ``tail``) decode to
    text that takes at most ``cap`` bytes in a JSON string."""

    def size(n: int) -> int:
        part = data[len(data) - n :] if tail else data[:n]
        return json_size(part.decode("utf-8", errors="replace"))

    if size(len(data)) <= cap:
        return len(data)
    low, high = 0, min(len(data), cap)
    while low < high:  # the largest n with size(n) <= cap
        middle = (low + high + 1) // 2
        if size(middle) <= cap:
            low = middle
        else:
            high = middle - 1
    return low


def fit(text: str, cap: int, tail: bool) -> str:
    """``text`` cut to take at most ``cap`` bytes in JSON, keeping its start (or its end
    with ``tail``), never inside a character."""
    data = text.encode()
    n = fitting(data, cap, tail)
    if n == len(data):
        return text
    if not tail:
        return utf8_prefix(data, n).decode()
    end = data[len(data) - n :]
    while end and end[0] & 0xC0 == 0x80:  # not inside a character
        end = end[1:]
    return end.decode()
