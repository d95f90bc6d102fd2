"""Command-line arguments derived from the command declarations.

Every declared command becomes a subcommand named after its wire name without
``guest-``; its options come from the signature and type hints of ``Command.build``:

- required parameters are positional (``file-read HANDLE``), optional ones are flags
  (``--count N``), named after the parameter with ``-`` for ``_``;
- ``int``, ``float``, ``str`` convert as such; an enum gives its values as choices; a
  union tries its members in turn (``--whence {set,cur,end}|N``);
- ``bool`` is ``--x/--no-x``; ``bool | Enum`` is ``--x [VALUE]``;
- a sequence takes one or more values and can be repeated; a mapping takes
  ``KEY=VALUE`` items; a model takes a JSON object (per item, for a sequence of models);
- ``bytes`` are read from a file, ``-`` for stdin;
- a parameter named ``password`` is never taken from the command line: it is read from
  the terminal (without echo) or from stdin.

Nothing here names a command: a new declaration gets its subcommand by itself.
"""

from __future__ import annotations

import argparse
import enum
import functools
import inspect
import json
import re
import sys
import textwrap
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal, TypeGuard

from ..commands import Command, all_commands
from .core import Context, Outcome, Runner, Subcommand
from .inputs import read_bytes, read_secret

if TYPE_CHECKING:
    from pydantic import BaseModel

    from ..client import GuestAgent

__all__ = [
    "Parameter",
    "call_arguments",
    "parameters",
    "plain",
    "subcommand_name",
    "wire_subcommand",
]

SECRETS: Final = frozenset({"password"})
"""Parameters read from the terminal or stdin, never from argv (which ps shows)."""

Kind = Literal["value", "list", "mapping", "bytes", "flag", "flag-or-value", "secret"]
Convert = Callable[[str], Any]


_ROLE: Final = re.compile(r":[a-z]+:`~?(?:[\w.]+\.)?(\w+)`")
_TYPE_ASIDE: Final = re.compile(r"\s\(:class:`[^`]+`\)")
_LITERAL: Final = re.compile(r"``(\w+)``")


def plain(doc: str, words: Mapping[str, str] | None = None) -> str:
    """A declaration's docstring in qga's words.

    A parenthesis that only names a Python type goes; a declared method becomes its
    subcommand (``fsfreeze_thaw`` -> fsfreeze-thaw); a parameter in ``words`` becomes
    its command-line form (``mountpoints`` -> --mountpoints); other reST markup goes
    (``x`` -> x, :class:`~a.B` -> B).
    """
    words = {**_METHOD_WORDS, **(words or {})}
    doc = _TYPE_ASIDE.sub("", doc)
    doc = _LITERAL.sub(lambda found: words.get(found[1], found[1]), doc)
    doc = _ROLE.sub(lambda found: words.get(found[1], found[1]), doc)
    return _METHOD.sub(lambda found: _METHOD_WORDS[found[0]], doc)


def subcommand_name(command: Command[Any, Any]) -> str:
    """The wire name without its ``guest-`` prefix."""
    return command.wire.removeprefix("guest-")


_METHOD_WORDS: Final = {command.method: subcommand_name(command) for command in all_commands()}
_METHOD: Final = re.compile(r"\b(?:" + "|".join(map(re.escape, _METHOD_WORDS)) + r")\b")


@dataclass(frozen=True)
class Parameter:
    """One parameter of a declaration, as the command line takes it."""

    name: str
    kind: Kind
    required: bool
    convert: Convert
    metavar: str
    help: str | None = None

    @property
    def dest(self) -> str:
        """The namespace attribute (prefixed: a parameter may be called ``timeout``)."""
        return f"arg_{self.name}"

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def positional(self) -> bool:
        return self.required and self.kind in ("value", "list", "bytes")

    def add_to(self, parser: argparse.ArgumentParser) -> None:
        """Add this parameter's argument to a subcommand's parser."""
        if self.kind == "secret":
            return
        if self.positional:
            parser.add_argument(
                self.dest,
                metavar=self.metavar,
                type=self.convert,
                nargs="+" if self.kind == "list" else None,
                help=self.help,
            )
            return
        options: dict[str, Any] = {"dest": self.dest, "metavar": self.metavar, "help": self.help}
        if self.kind == "flag":
            options = {"dest": self.dest, "action": argparse.BooleanOptionalAction}
        elif self.kind == "flag-or-value":
            options.update(nargs="?", const=True, type=self.convert)
        elif self.kind in ("list", "mapping"):
            options.update(action="extend", nargs="+", type=self.convert)
        else:
            options.update(type=self.convert)
        parser.add_argument(self.flag, required=self.required, **options)


def parameters(command: Command[Any, Any]) -> list[Parameter]:
    """The parameters of a declaration, in signature order."""
    hints = command.argument_types()
    return [
        _parameter(name, hints[name], spec.default is inspect.Parameter.empty)
        for name, spec in inspect.signature(command.build).parameters.items()
    ]


def call_arguments(command: Command[Any, Any], namespace: argparse.Namespace) -> dict[str, Any]:
    """The keyword arguments for the typed method, from parsed arguments.

    Reads what comes from elsewhere (``bytes`` files, stdin, a password) now, once.
    Arguments not given are left out, so the declaration's defaults apply.
    """
    kwargs: dict[str, Any] = {}
    for param in parameters(command):
        if param.kind == "secret":
            kwargs[param.name] = read_secret(f"{param.name.capitalize()}: ")
            continue
        value = getattr(namespace, param.dest, None)
        if value is None:
            continue
        if param.kind == "bytes":
            value = read_bytes(value)
        elif param.kind == "mapping":
            value = dict(value)
        kwargs[param.name] = value
    return kwargs


def _parameter(name: str, hint: Any, required: bool) -> Parameter:
    members = [m for m in _members(hint) if m is not type(None)]
    if name in SECRETS:
        return Parameter(name, "secret", required, str, name.upper())
    if bool in members and len(members) > 1:
        convert, metavar, text = _converter([m for m in members if m is not bool])
        return Parameter(name, "flag-or-value", required, convert, metavar, text)
    if members == [bool]:
        return Parameter(name, "flag", required, str, "")
    if members == [bytes]:
        return Parameter(name, "bytes", required, str, "FILE", "a local file; - for stdin")
    kind: Kind = "value"
    origin, args = typing.get_origin(members[0]), typing.get_args(members[0])
    if len(members) == 1 and origin in (Mapping, dict):
        return Parameter(name, "mapping", required, _key_value, "KEY=VALUE", "repeatable")
    if len(members) == 1 and origin in (Sequence, list, tuple):
        kind, members = "list", [args[0]]
    convert, metavar, text = _converter(members)
    if kind == "list":
        text = "; ".join(filter(None, ["one or more, repeatable", text]))
    # Positionals are named after the parameter (HANDLE, PATH), and so are text flags.
    if (required and not metavar.startswith("{")) or metavar == "TEXT":
        metavar = name.upper()
    return Parameter(name, kind, required, convert, metavar, text)


def _members(hint: Any) -> tuple[Any, ...]:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return typing.get_args(hint)
    return (hint,)


def _converter(types_: Sequence[Any]) -> tuple[Convert, str, str | None]:
    """A string converter trying each type in turn, its metavar and its help."""
    parts = [_one(tp) for tp in types_]
    if len(parts) == 1:
        return parts[0]

    def convert(text: str) -> Any:
        for one, _, _ in parts:
            try:
                return one(text)
            except (argparse.ArgumentTypeError, ValueError):
                continue
        raise argparse.ArgumentTypeError(
            f"{text} is none of {' | '.join(metavar for _, metavar, _ in parts)}"
        )

    texts = [text for _, _, text in parts if text]
    return convert, "|".join(metavar for _, metavar, _ in parts), "; ".join(texts) or None


def _is_model_class(tp: Any) -> TypeGuard[type[BaseModel]]:
    """A pydantic model class; without importing pydantic when nothing has."""
    pydantic = sys.modules.get("pydantic")  # a model type means pydantic is imported
    return isinstance(tp, type) and pydantic is not None and issubclass(tp, pydantic.BaseModel)


def _one(tp: Any) -> tuple[Convert, str, str | None]:
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return _enum_converter(tp), "{" + ",".join(str(m.value) for m in tp) + "}", None
    if _is_model_class(tp):
        fields = ", ".join(f'"{info.alias or name}"' for name, info in tp.model_fields.items())
        return _model_converter(tp), "JSON", f"a JSON object with {fields}"
    if tp is int:
        return _named(int, "integer"), "N", None
    if tp is float:
        return _named(float, "number"), "NUMBER", None
    if tp is str:
        return str, "TEXT", None
    raise TypeError(f"no command-line form for {tp}: teach qga_libvirt/cli/derive.py")


def _named(convert: Callable[[str], Any], name: str) -> Convert:
    def named(text: str) -> Any:
        try:
            return convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text} is not an {name}") from None

    return named


def _enum_converter(tp: type[enum.Enum]) -> Convert:
    values = {str(member.value): member for member in tp}

    def convert(text: str) -> enum.Enum:
        if text not in values:
            raise argparse.ArgumentTypeError(f"{text} is not one of {', '.join(values)}")
        return values[text]

    return convert


def _model_converter(tp: type[BaseModel]) -> Convert:
    from pydantic import ValidationError

    def convert(text: str) -> BaseModel:
        try:
            return tp.model_validate(json.loads(text))
        except ValidationError as exc:
            first = exc.errors(include_url=False)[0]
            where = ".".join(map(str, first["loc"]))
            why = f"{first['msg']} at {where}" if where else first["msg"]
        except ValueError as exc:
            why = f"not JSON ({exc})"
        raise argparse.ArgumentTypeError(f"{text} is not a JSON object as --help shows: {why}")

    return convert


def _key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text} is not KEY=VALUE")
    return key, value


def _reflow(text: str, width: int = 78) -> str:
    """Paragraphs refilled (the docstring's line breaks no longer fit once reworded)."""
    paragraphs = (" ".join(part.split()) for part in text.split("\n\n"))
    return "\n\n".join(textwrap.fill(p, width) for p in paragraphs)


def wire_subcommand(command: Command[Any, Any]) -> Subcommand:
    """The subcommand that runs ``command`` with arguments from the command line.

    Its parameters are read when first needed (its parser, its description, a summary
    that names one): ``qga --help`` lists every command without resolving their types,
    which would import the models a few of them take.
    """

    @functools.cache
    def params() -> list[Parameter]:
        return parameters(command)

    def words() -> dict[str, str]:
        return {p.name: p.flag if not p.positional else p.metavar for p in params()}

    def arguments(parser: argparse.ArgumentParser) -> None:
        for param in params():
            param.add_to(parser)

    def prepare(ctx: Context, namespace: argparse.Namespace) -> Runner:
        kwargs = call_arguments(command, namespace)

        def run(agent: GuestAgent) -> Outcome:
            method = command.__get__(agent, type(agent))  # users' declared commands too
            return Outcome(method(**kwargs), done=done)

        return run

    done = ""
    if not command.returns and command.facts.changes_guest:  # silent otherwise
        name = subcommand_name(command)
        done = f"{name}: done" if command.facts.replies else f"{name}: sent (no reply comes)"

    facts = command.facts

    def description() -> str:
        notes = [f"Runs {command.wire} (QEMU {facts.since}+, {facts.platforms})."]
        notes += [
            f"The {p.name} is asked on the terminal, or read from stdin's first line."
            for p in params()
            if p.kind == "secret"
        ]
        if not facts.replies:
            notes.append("The agent sends no reply on success.")
        if facts.changes_guest:
            notes.append("Changes the guest.")
        return _reflow(f"{plain(command.doc, words())}\n\n{' '.join(notes)}")

    marked = "`" in command.summary  # it may name a parameter: ``count``
    return Subcommand(
        name=subcommand_name(command),
        summary=plain(command.summary, words() if marked else None),
        prepare=prepare,
        arguments=arguments,
        runs=(command,),
        description=description,
    )
