"""qga speaks qga: no help text and no error message of the command line speaks Python.

The library words its errors' remedies for Python callers; the CLI rewords them
(qga_libvirt/cli/messages.py). These tests read every help text, every remedy as the CLI
words it, and the CLI's own usage messages, for the marks Python leaves in prose.
"""

from __future__ import annotations

import ast
import io
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import pytest

from qga_libvirt.cli import app
from qga_libvirt.cli.messages import HINTS, hint_text
from qga_libvirt.cli.output import Output
from qga_libvirt.errors import Hint, Remedy

ROOT = Path(__file__).resolve().parent.parent

PYTHONISMS: dict[str, re.Pattern[str]] = {
    # uri=, backend='socket', capture_via= (a --flag=value or KEY=VALUE is not one)
    "keyword argument": re.compile(r"(?<![\w,-])[a-z_][a-z0-9_]*="),
    # collect(192), len(vcpus), wait_for_agent(), fopen() (crypt(3), a man page, is fine)
    "call": re.compile(r"\b[a-z_][a-z0-9_]*\((?!\d\))"),
    "empty call": re.compile(r"\w\(\)"),
    "method access": re.compile(r"\b[a-z_]\w*\.[a-z_]\w*\("),
    "Python constant": re.compile(r"\b(?:None|True|False)\b"),
    "raises": re.compile(r"\brais(?:e|es|ed|ing)\b", re.IGNORECASE),
    # ['kill', '192'], {'a': 1}, b'..', a doubled quote as in 'lab1''s
    "Python literal": re.compile(r"[\[{(]\s*'|\bb'|''|\w'\w+'|'\w+'\w"),
    "reST role or literal": re.compile(r":(?:class|meth|func|attr|data):|``"),
    "dunder": re.compile(r"__\w+__"),
    # GuestAgent, SeekWhence, ProtocolError, ExecStatus: Python class names
    "class name": re.compile(r"\b[A-Z][a-z]+(?:[A-Z][a-z0-9]+)+\b"),
    "snake_case identifier": re.compile(r"\b[a-z]+_[a-z_]+\b"),
}
"""What Python leaves in prose, and how to spot it."""

ALLOWED: frozenset[str] = frozenset(
    {
        # the agent's own error classes, shown as the agent sent them
        "GenericError",
        "CommandNotFound",
        # QEMU's spelling of its own things
        "FreeBSD",
        "PowerShell",
        # a file's name
        "authorized_keys",
    }
)


_XML: Final = re.compile(r"<[^<>]*>")


def pythonisms(text: str) -> list[str]:
    """The Python marks in ``text``, as ``kind: excerpt`` (libvirt XML is not one)."""
    text = _XML.sub("<xml>", text)
    hits = []
    for kind, pattern in PYTHONISMS.items():
        for found in pattern.finditer(text):
            if found.group(0) in ALLOWED:
                continue
            start, end = max(found.start() - 30, 0), min(found.end() + 30, len(text))
            hits.append(f"{kind}: ...{text[start:end]!r}...")
    return hits


def test_the_patterns_catch_what_the_issue_found() -> None:
    for text in (
        "pass uri= for another hypervisor",
        "(GuestAgent.wait_for_agent waits for it)",
        "use backend='libvirt' (or 'auto')",
        "domain 'lab1''s agent channel",
        "collect(192) waits for it",
        "run(['kill', '192']) stops it",
        "returns nothing, raises if it does not",
        "(all when None)",
        "whence is a SeekWhence",
        "returns len(vcpus)",
        "which raises ProtocolError",
        "out_data: 'hello\\n'",
    ):
        assert pythonisms(text), text
    for text in (
        "qga web1 wait waits for it",
        "give -c URI for another hypervisor",
        "--env KEY=VALUE",
        "a crypt(3) hash",
        "[GenericError]",
        "the domain 'web1' is shut off",
        "--thaw-after SECONDS",
        "add <channel type='unix'><target name='org.qemu.guest_agent.0'/></channel>",
    ):
        assert not pythonisms(text), (text, pythonisms(text))


def help_texts() -> Iterator[tuple[str, str]]:
    """(name, text) of every help the CLI prints: qga --help, each command's --help."""
    buffer = io.BytesIO()
    app._help(Output(json_mode=False, stdout=buffer), None)
    yield "qga --help", buffer.getvalue().decode()
    for command in app.HOST_COMMANDS.values():
        yield f"qga {command.name} --help", app.host_parser(command).format_help()
    for name, sub in app.agent_subcommands().items():
        yield f"qga DOMAIN {name} --help", app.subcommand_parser(sub, "qga DOMAIN").format_help()


@pytest.mark.parametrize(("name", "text"), list(help_texts()), ids=lambda v: v[:40])
def test_no_help_text_speaks_python(name: str, text: str) -> None:
    assert not pythonisms(text), "\n".join(pythonisms(text))


@pytest.mark.parametrize("remedy", list(Remedy), ids=lambda r: r.value)
def test_every_remedy_has_qga_words_that_are_not_python(remedy: Remedy) -> None:
    details = {"uri": "qemu:///system", "backend": "socket", "pid": 192, "files": ["/tmp/o"]}
    details |= {"target": "domain 'web1'"}
    for where in ("web1", "--socket /run/qga.sock"):
        text = hint_text(Hint(remedy, "the library's words", details), where)
        assert text, remedy
        assert not pythonisms(text), (remedy, text, pythonisms(text))
    assert set(HINTS) == set(Remedy)


def _usage_messages() -> Iterator[tuple[str, str]]:
    """The text of every UsageError raised in qga_libvirt/cli (f-string holes as X)."""
    for source in sorted((ROOT / "qga_libvirt" / "cli").glob("*.py")):
        for node in ast.walk(ast.parse(source.read_text())):
            if not (isinstance(node, ast.Call) and getattr(node.func, "id", "") == "UsageError"):
                continue
            for arg in node.args:
                yield f"{source.name}:{node.lineno}", _text(arg)


def _text(node: ast.expr) -> str:
    if isinstance(node, ast.Constant):
        return str(node.value)
    if isinstance(node, ast.JoinedStr):
        return "".join(
            _text(value) if isinstance(value, ast.Constant) else "X" for value in node.values
        )
    if isinstance(node, ast.BinOp):
        return _text(node.left) + _text(node.right)
    return "X"


@pytest.mark.parametrize(("where", "text"), list(_usage_messages()), ids=lambda v: v[:40])
def test_no_usage_message_speaks_python(where: str, text: str) -> None:
    assert not pythonisms(text), "\n".join(pythonisms(text))


def test_the_cli_quotes_nothing_as_python_does() -> None:
    """No !r in messages: repr quotes text as Python does ('it''s', '\\n')."""
    for source in sorted((ROOT / "qga_libvirt" / "cli").glob("*.py")):
        assert "!r}" not in source.read_text(), source.name


def _library_messages() -> Iterator[tuple[str, str]]:
    """The message of every GuestAgentError the library raises (f-string holes as X).

    The message is what qga shows, followed by the hint in its own words: the library's
    Python words for the remedy go in ``hint=``, never in the message.
    """
    import qga_libvirt.errors as errors

    names = {
        name
        for name, value in vars(errors).items()
        if isinstance(value, type) and issubclass(value, errors.GuestAgentError)
    }
    for source in sorted((ROOT / "qga_libvirt").rglob("*.py")):
        if "cli" in source.parts:
            continue
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", "") in names and node.args:
                where = f"{source.relative_to(ROOT)}:{node.lineno}"
                yield where, _text(node.args[0])


# Said only to Python code that used a transport after closing it: qga never does.
_PYTHON_ONLY = ("open a new GuestAgent", "open a new AsyncGuestAgent")


@pytest.mark.parametrize(("where", "text"), list(_library_messages()), ids=lambda v: v[:50])
def test_no_library_error_message_speaks_python(where: str, text: str) -> None:
    if any(words in text for words in _PYTHON_ONLY):
        return
    assert not pythonisms(text), "\n".join(pythonisms(text))
