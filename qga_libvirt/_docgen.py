"""Render docs/commands.md from the declarations in :mod:`qga_libvirt.commands`.

``python -m qga_libvirt._docgen`` writes the file; ``--check`` only compares and exits 1
when the file is stale (a test does the same).
"""

from __future__ import annotations

import argparse
import enum
import inspect
import re
import sys
import types
import typing
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from .commands import Command, all_commands
from .models import Model, OpenEnum

__all__ = ["DEFAULT_OUTPUT", "main", "render"]

_ROLE = re.compile(r":[a-z]+:`~?([\w.]+)`")

DEFAULT_OUTPUT = Path(__file__).resolve().parent.parent / "docs" / "commands.md"

_HEADER = """\
# QGA commands

<!-- Generated from qga_libvirt/commands.py by `python -m qga_libvirt._docgen`: do not edit. -->

Every command of the QEMU guest agent is a typed method of `GuestAgent`, declared once in
`qga_libvirt/commands.py`. Arguments are Python values (bytes are bytes: base64 is done
for you); optional arguments left as None are not sent, so the agent's default applies.
Replies are validated into the types below; a reply that breaks the schema raises
`ProtocolError` with the reply attached, fields a newer agent adds are kept in `.extras`,
and values a newer agent adds to an open enum are kept too.

Every method raises `AgentCommandError` when the agent answers with an error:
`CommandDisabledError` (disabled by `--block-rpcs`/`--allow-rpcs`), `GuestFrozenError`
(refused while the filesystems are frozen: only the frozen-safe commands run then) and
`CommandNotFoundError` (too old an agent) are its subclasses. `GuestAgent.supports(name)`
tells beforehand. Other `GuestAgentError`s mean the agent was not reached or did not
answer in time.
"""


def render() -> str:
    """The whole of docs/commands.md."""
    commands = list(all_commands())
    out = [_HEADER, "| method | wire command | returns | since | platforms | notes |"]
    out.append("|---|---|---|---|---|---|")
    for cmd in commands:
        notes = ", ".join(_notes(cmd)) or ""
        out.append(
            f"| [`{cmd.method}`](#{cmd.wire}) | `{cmd.wire}` | {_cell(_returns(cmd))} "
            f"| {cmd.facts.since} | {cmd.facts.platforms} | {notes} |"
        )
    out.append("")
    out.append("## Commands")
    for cmd in commands:
        out += _command(cmd)
    out.append("## Types")
    out.append("")
    out.append(
        "Field names are snake_case; the wire name is what the agent sends. Optional "
        "fields are None when the agent leaves them out; bytes fields are base64 text on "
        "the wire, decoded."
    )
    for kind in _kinds(commands):
        out += _kind(kind)
    return "\n".join(out).rstrip("\n") + "\n"


def _notes(cmd: Command[Any, Any]) -> Iterator[str]:
    if not cmd.facts.replies:
        yield "no reply on success"
    if cmd.facts.frozen_safe:
        yield "frozen-safe"
    if cmd.facts.changes_guest:
        yield "changes the guest"


def _command(cmd: Command[Any, Any]) -> list[str]:
    hints = _hints(cmd)
    params = inspect.signature(cmd.build).parameters.values()
    signature = ", ".join(_param(p, hints[p.name]) for p in params)
    out = ["", f"### {cmd.wire}", ""]
    out.append("```python")
    out.append(f"agent.{cmd.method}({signature}) -> {_type(cmd.reply)}")
    out.append("```")
    out.append("")
    out.append(_markdown(cmd.doc))
    out.append("")
    yes_no = {True: "yes", False: "no"}
    out.append(
        f"Since QEMU {cmd.facts.since} · platforms: {cmd.facts.platforms} · "
        f"replies on success: {yes_no[cmd.facts.replies]} · "
        f"safe while frozen: {yes_no[cmd.facts.frozen_safe]} · "
        f"changes the guest: {yes_no[cmd.facts.changes_guest]}"
    )
    if params:
        out += ["", "| argument | type | default |", "|---|---|---|"]
        for p in params:
            default = "required" if p.default is p.empty else f"`{_value(p.default)}`"
            out.append(f"| `{p.name}` | {_cell(_type(hints[p.name], link=True))} | {default} |")
    out += ["", f"Returns: {_returns(cmd)}"]
    return out


def _returns(cmd: Command[Any, Any]) -> str:
    if not cmd.facts.replies:
        return "None (no reply on success)"
    shown = _type(cmd.reply, link=True)
    return f"{shown} (the reply's `{cmd.unwrap}`)" if cmd.unwrap else shown


def _hints(cmd: Command[Any, Any]) -> dict[str, Any]:
    return cmd.argument_types()


def _param(p: inspect.Parameter, hint: Any) -> str:
    text = f"{p.name}: {_type(hint)}"
    return text if p.default is p.empty else f"{text} = {_value(p.default)}"


def _value(value: Any) -> str:
    if isinstance(value, enum.Enum):
        return f"{type(value).__name__}.{value.name}"
    return repr(value)


def _type(tp: Any, *, link: bool = False) -> str:
    """A type as a reader writes it: ``list[FileRead] | None``, optionally with links."""
    if tp is None or tp is type(None):
        return "None"
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Annotated:
        return _type(args[0], link=link)
    if origin is typing.Union or origin is types.UnionType:
        return " | ".join(_type(arg, link=link) for arg in args)
    if origin is not None:
        name = getattr(origin, "__name__", str(origin))
        return f"{name}[{', '.join(_type(arg, link=link) for arg in args)}]"
    if isinstance(tp, type):
        if link and _documented(tp):
            return f"[{tp.__name__}](#{tp.__name__.lower()})"
        return tp.__name__
    return str(tp)


def _documented(tp: type) -> bool:
    return issubclass(tp, BaseModel | enum.Enum)


def _leaves(tp: Any) -> Iterator[type]:
    """The models and enums a type mentions."""
    args = typing.get_args(tp)
    if typing.get_origin(tp) is typing.Annotated:
        args = args[:1]
    if args:
        for arg in args:
            yield from _leaves(arg)
    elif isinstance(tp, type) and _documented(tp):
        yield tp


def _kinds(commands: Sequence[Command[Any, Any]]) -> list[type]:
    """Every model and enum the commands use, in order of first mention."""
    seen: dict[type, None] = {}

    def visit(tp: Any) -> None:
        for leaf in _leaves(tp):
            if leaf in seen:
                continue
            seen[leaf] = None
            if issubclass(leaf, BaseModel):
                for field in leaf.model_fields.values():
                    visit(field.annotation)

    for cmd in commands:
        for name, hint in _hints(cmd).items():
            if name != "return":
                visit(hint)
        visit(cmd.reply)
    return list(seen)


def _kind(tp: type) -> list[str]:
    out = ["", f"### {tp.__name__}", "", _markdown(inspect.cleandoc(tp.__doc__ or "")), ""]
    if issubclass(tp, enum.Enum):
        values = ", ".join(f"`{member.value}`" for member in tp)
        out.append(f"Values: {values}.")
        if issubclass(tp, OpenEnum):
            out.append("Open: a value a newer agent adds is kept (its `known` is False).")
        return out
    assert issubclass(tp, Model)
    out += ["| field | wire name | type | |", "|---|---|---|---|"]
    for name, field in tp.model_fields.items():
        wire = field.alias or name
        note = "" if field.is_required() else "optional"
        shown = _cell(_type(field.annotation, link=True))
        out.append(f"| `{name}` | `{wire}` | {shown} | {note} |")
    return out


def _markdown(doc: str) -> str:
    """A docstring with its Sphinx roles as plain code: ``:class:`~a.B``` -> ```B```."""
    return _ROLE.sub(lambda match: f"`{match[1].rsplit('.', 1)[-1]}`", doc)


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def main(argv: Sequence[str] | None = None) -> int:
    """Write docs/commands.md, or with ``--check`` exit 1 when it is stale."""
    parser = argparse.ArgumentParser(prog="python -m qga_libvirt._docgen")
    parser.add_argument("--check", action="store_true", help="only check, exit 1 if stale")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    options = parser.parse_args(argv)
    text = render()
    output: Path = options.output
    if options.check:
        current = output.read_text(encoding="utf-8") if output.exists() else None
        if current != text:
            sys.stderr.write(f"{output} is stale: run python -m qga_libvirt._docgen\n")
            return 1
        return 0
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
