"""Errors in qga's words: the library's message, and its hint said as a qga command.

The library words an error's remedy for Python callers (``wait_for_agent()``,
``uri=``); :class:`~qga_libvirt.errors.Hint` names the remedy, so the command line can
say the same in its own terms (``qga web1 wait``, ``-c URI``). Every remedy has its
wording here (a test checks it).
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Callable, Mapping
from typing import Any, Final

from ..errors import GuestAgentError, Hint, Remedy

__all__ = ["HINTS", "error_text", "hint_text", "local_error_text"]

Words = Callable[[str, Mapping[str, Any]], str]
"""(the target as typed after ``qga``, the hint's details) -> the hint in qga's words."""


def _pid(details: Mapping[str, Any]) -> str:
    return str(details.get("pid", "PID"))


def _connect(details: Mapping[str, Any]) -> str:
    uri = details.get("uri")
    return f" -c {uri}" if uri else ""


def _backend(where: str, details: Mapping[str, Any]) -> str:
    backend = details.get("backend", "auto")
    return f"give --backend {backend} (or leave --backend out: auto picks it)"


def _files(where: str, details: Mapping[str, Any]) -> str:
    files = list(details.get("files", ()))
    domain = where if not where.startswith("--") else ""
    copies = " and ".join(f"`qga cp {domain}:{shlex.quote(f)} .`" for f in files)
    listed = " and ".join(files)
    return f"its output is in {listed} in the guest: copy it with {copies}, then remove it"


HINTS: Final[dict[Remedy, Words]] = {
    Remedy.CHECK_DOMAIN: lambda where, details: (
        f"check the name with `qga{_connect(details)} list --all`, or give -c URI for "
        "another hypervisor"
    ),
    Remedy.WAIT_FOR_AGENT: lambda where, details: f"`qga {where} wait` waits for it",
    Remedy.USE_BACKEND: _backend,
    Remedy.COLLECT: lambda where, details: (
        f"`qga {where} exec --collect {_pid(details)}` waits for it and prints its output"
    ),
    Remedy.CAPTURE_IN_FILES: lambda where, details: (
        "send the output to a file in the guest (`qga "
        f"{where} shell 'CMD > /tmp/out'`) and copy it with `qga cp`, or use --backend socket"
    ),
    Remedy.COLLECT_LATER: lambda where, details: (
        f"`qga {where} exec-status {_pid(details)}` gets it if the agent still has it"
    ),
    Remedy.READ_GUEST_FILES: _files,
    Remedy.THAW: lambda where, details: f"thaw them now: `qga {where} fsfreeze-thaw`",
    Remedy.LONGER_FREEZE: lambda where, details: (
        "give a longer --thaw-after, or do less while frozen"
    ),
    Remedy.LONGER_FLEET_BOUND: lambda where, details: (
        "give a longer --timeout if it is merely slow (each target may take three times it)"
    ),
    Remedy.SMALLER_WRITES: lambda where, details: (
        "copy files with `qga cp`, which writes in chunks, or use --backend socket"
    ),
    Remedy.SHARE_SOCKET: lambda where, details: (
        "wait for the other programs using the agent's socket to finish, or run fewer at once"
    ),
    Remedy.WRITE_IN_PLACE: lambda where, details: (
        "`qga cp --in-place` writes the file in place instead (truncated first, partial if "
        "interrupted; no --mode)"
    ),
}
"""Every remedy, in qga's words."""


def hint_text(hint: Hint, where: str) -> str:
    """``hint`` as qga says it, for the target typed as ``where`` (``web1``, ``--socket P``)."""
    return HINTS[hint.action](where, hint.details)


# A download is written to a temporary ".NAME.XXXXXXXX.part" beside its destination
# (operations/files.py), then renamed: the user knows the file by its final name.
_PART: Final = re.compile(r"^(?P<dir>.*/)?\.(?P<name>[^/]+)\.[^./]+\.part$")


def local_error_text(error: OSError) -> str:
    """A local file error without errno numbers or temporary names."""
    why = error.strerror or str(error)
    filename = error.filename2 if error.filename2 is not None else error.filename
    if filename is None:
        return why
    name = os.fsdecode(filename)
    found = _PART.match(name)
    if found:
        name = (found["dir"] or "") + found["name"]
    return f"local file {name}: {why}"


def error_text(error: BaseException, where: str) -> str:
    """An error's message for qga's users: the library's hint reworded as a qga command,
    a local file error as the file and the reason."""
    if isinstance(error, GuestAgentError) and error.hint is not None:
        return f"{error.message}; {hint_text(error.hint, where)}"
    if isinstance(error, OSError):
        return local_error_text(error)
    return str(error)
