"""The audit trail: one record per tool call, as a log line and (option) a JSON line.

A record says who asked what of which guest and how it ended; never an argument's
secret value (passwords, key material, file contents): only the fields named here.
"""

from __future__ import annotations

import datetime
import json
import logging
import threading
from dataclasses import asdict, dataclass, field
from typing import IO, Any, Literal

__all__ = ["AuditLog", "AuditRecord", "Outcome"]

log = logging.getLogger("qga_mcp.audit")

Outcome = Literal["ok", "error", "denied", "cancelled", "crash"]

_PATH_ARGUMENTS = ("path",)
_USER_ARGUMENTS = ("username",)


@dataclass
class AuditRecord:
    """What one call did. Filled as the call goes; written once at its end."""

    tool: str
    session: str
    peer: str | None = None
    domain: str | None = None
    """The domain as the call named it."""
    domain_name: str | None = None
    domain_uuid: str | None = None
    argv0: str | None = None
    path: str | None = None
    username: str | None = None
    outcome: Outcome = "ok"
    error: str | None = None
    """The error's type, never its message (which may quote arguments)."""
    duration_ms: float = 0.0
    time: str = field(
        default_factory=lambda: datetime.datetime.now(datetime.UTC).isoformat(
            timespec="milliseconds"
        )
    )

    def note_arguments(self, arguments: dict[str, Any]) -> None:
        """Keep the arguments an auditor needs and that are not secrets."""
        argv = arguments.get("argv")
        if isinstance(argv, list) and argv and isinstance(argv[0], str):
            self.argv0 = argv[0][:300]
        for name in _PATH_ARGUMENTS:
            if isinstance(arguments.get(name), str):
                self.path = arguments[name][:1000]
        for name in _USER_ARGUMENTS:
            if isinstance(arguments.get(name), str):
                self.username = arguments[name][:100]


class AuditLog:
    """Writes records: a log line always, a JSON line to ``path`` when one is given."""

    def __init__(self, path: str | None) -> None:
        self._lock = threading.Lock()
        self._file: IO[str] | None = None
        if path is not None:
            self._file = open(path, "a", encoding="utf-8", buffering=1)  # noqa: SIM115

    def write(self, record: AuditRecord) -> None:
        log.info(
            "tool=%s domain=%s outcome=%s duration_ms=%.0f",
            record.tool,
            "-" if record.domain is None else json.dumps(record.domain[:100]),
            record.outcome if record.error is None else f"{record.outcome} {record.error}",
            record.duration_ms,
        )
        if self._file is None:
            return
        fields = {k: v for k, v in asdict(record).items() if v is not None}
        line = json.dumps(fields, ensure_ascii=True, separators=(",", ":"))
        with self._lock:
            self._file.write(line + "\n")

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
