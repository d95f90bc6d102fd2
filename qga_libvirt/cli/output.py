"""Everything ``qga`` writes: JSON for scripts, tables and key/value text for people.

JSON conventions (see docs/cli.md): models are dumped with their snake_case field names
(:meth:`pydantic.BaseModel.model_dump`), including the fields a newer agent added;
dataclasses by their field names; bytes as base64 text; enums as their values; a command
without a value gives ``null``.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import enum
import json
import os
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import IO, Any

from pydantic import BaseModel

__all__ = [
    "Output",
    "ProgressBar",
    "human_lines",
    "human_size",
    "one_line",
    "table",
    "to_json",
]


def to_json(value: Any) -> Any:
    """A JSON-ready copy of ``value`` (models, dataclasses, bytes, enums, containers)."""
    if isinstance(value, BaseModel):
        return to_json(value.model_dump(mode="python"))
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_json(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, enum.Enum):
        return to_json(value.value)
    if isinstance(value, Mapping):
        return {str(key): to_json(item) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [to_json(item) for item in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, datetime.datetime | datetime.date):
        return value.isoformat()
    return str(value)


# --- for people -----------------------------------------------------------------------


def _scalar(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, enum.Enum):
        return str(value.value)
    if isinstance(value, bytes):
        try:
            text = value.decode()
        except UnicodeDecodeError:
            return f"(base64) {base64.b64encode(value).decode('ascii')}"
        # JSON's escapes, not Python's repr: "a\tb\n" reads the same to everyone
        return text if text.isprintable() else json.dumps(text, ensure_ascii=False)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _plain(value: Any) -> Any:
    """Models and dataclasses as dicts (field order kept), bytes and enums left as they are."""
    if isinstance(value, BaseModel):
        return {key: _plain(item) for key, item in value.model_dump(mode="python").items()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value


def _is_flat(item: Any) -> bool:
    return isinstance(item, dict) and not any(
        isinstance(value, dict | list) for value in item.values()
    )


def human_lines(value: Any) -> list[str]:
    """``value`` as text: scalars as they are, objects as ``key: value`` lines (None
    fields left out), lists of flat objects as a table, other lists item by item; None
    as nothing at all."""
    return [] if value is None else _lines(_plain(value), "")


def _lines(value: Any, indent: str) -> list[str]:
    if isinstance(value, dict):
        out = []
        for key, item in value.items():
            if item is None:
                continue
            if _nested(item):
                out.append(f"{indent}{key}:")
                out += _lines(item, indent + "  ")
            else:
                out.append(f"{indent}{key}: {_inline(item)}")
        return out
    if isinstance(value, list):
        if value and all(_is_flat(item) for item in value):
            columns = [key for key in value[0] if any(row.get(key) is not None for row in value)]
            rows = [[_scalar(row.get(key)) for key in columns] for row in value]
            return [indent + line for line in table(columns, rows)]
        if not _nested(value):
            return [indent + _scalar(item) for item in value]
        out = []
        for number, item in enumerate(value):
            if number and not indent:
                out.append("")
            out += _lines(item, indent)
        return out
    return [indent + _scalar(value)]


def _nested(value: Any) -> bool:
    """Whether ``value`` needs lines of its own (a non-empty object, a list of those)."""
    if isinstance(value, dict):
        return bool(value)
    return isinstance(value, list) and any(isinstance(item, dict | list) for item in value)


def _inline(value: Any) -> str:
    if isinstance(value, list):
        return ", ".join(_scalar(item) for item in value) or "-"
    if isinstance(value, dict):
        return "-"
    return _scalar(value)


def one_line(value: Any, width: int = 100) -> str:
    """``value`` in one line of at most ``width`` characters (for fleet results)."""
    plain = _plain(value)
    if plain is None:
        text = "-"
    elif isinstance(plain, dict | list):
        text = json.dumps(to_json(plain), ensure_ascii=False, separators=(",", ":"))
    else:
        text = " ".join(_scalar(plain).split())
    return text if len(text) <= width else text[: width - 1] + "…"


def table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    """A table like virsh's: a header, a rule, the rows; columns left-aligned."""
    body = [list(row) for row in rows]
    widths = [len(header) for header in headers]
    for row in body:
        widths = [max(width, len(cell)) for width, cell in zip(widths, row, strict=True)]

    def line(cells: Sequence[str]) -> str:
        return " " + "   ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    rule = "-" * (sum(widths) + 3 * (len(widths) - 1) + 2)
    return [line(headers), rule, *(line(row) for row in body)]


def human_size(count: int | None) -> str:
    """Bytes as people read them: 512 B, 1.5 KiB, 20.0 GiB; ``-`` when unknown."""
    if count is None:
        return "-"
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(value) < 1024 or unit == "PiB":
            return f"{count} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


# --- streams --------------------------------------------------------------------------


class Output:
    """stdout and stderr, as bytes; knows whether ``--json`` was asked for."""

    def __init__(
        self, *, json_mode: bool, stdout: IO[bytes] | None = None, stderr: IO[bytes] | None = None
    ) -> None:
        self.json_mode = json_mode
        self.stdout = stdout if stdout is not None else sys.stdout.buffer
        self.stderr = stderr if stderr is not None else sys.stderr.buffer

    def line(self, text: str = "") -> None:
        """One line of text on stdout."""
        self.stdout.write(text.encode() + b"\n")

    def lines(self, texts: Iterable[str]) -> None:
        for text in texts:
            self.line(text)

    def json(self, value: Any) -> None:
        """One JSON document on stdout (indented, keys in model order)."""
        self.line(json.dumps(to_json(value), indent=2, ensure_ascii=False))

    def raw(self, data: bytes, *, error: bool = False) -> None:
        """Bytes as they are, on stdout (or stderr)."""
        stream = self.stderr if error else self.stdout
        stream.write(data)
        stream.flush()

    def error(self, message: str) -> None:
        """One line on stderr, prefixed with ``qga: ``; newlines in ``message`` folded."""
        folded = " ".join(part.strip() for part in message.splitlines() if part.strip())
        self.stdout.flush()
        self.stderr.write(f"qga: {folded}\n".encode())
        self.stderr.flush()

    def flush(self) -> None:
        self.stdout.flush()
        self.stderr.flush()

    def stderr_is_terminal(self) -> bool:
        return _is_terminal(self.stderr)

    def stdout_is_terminal(self) -> bool:
        return _is_terminal(self.stdout)


def _is_terminal(stream: IO[bytes]) -> bool:
    try:
        return os.isatty(stream.fileno())
    except (OSError, ValueError):
        return False


class ProgressBar:
    """A one-line progress bar on stderr, redrawn at most 10 times a second; a library
    :data:`~qga_libvirt.operations.files.Progress` callback."""

    def __init__(self, out: Output, label: str) -> None:
        self.out = out
        self.label = label
        self.start = time.monotonic()
        self.drawn = 0.0
        self.shown = False

    def __call__(self, done: int, total: int | None) -> None:
        now = time.monotonic()
        if now - self.drawn < 0.1 and done != total:
            return
        self.drawn = now
        rate = done / max(now - self.start, 1e-6)
        if total:
            filled = 30 * done // total
            bar = f"[{'#' * filled}{' ' * (30 - filled)}] {100 * done // total:3d}% "
            amount = f"{human_size(done)} / {human_size(total)}"
        else:
            bar, amount = "", human_size(done)
        text = f"\r{self.label} {bar}{amount}  {human_size(int(rate))}/s\x1b[K"
        self.out.stderr.write(text.encode())
        self.out.stderr.flush()
        self.shown = True

    def finish(self) -> None:
        """End the bar's line (call once the transfer is over, done or not)."""
        if self.shown:
            self.out.stderr.write(b"\n")
            self.out.stderr.flush()
