"""The wire trace: every request and reply, as the ``qga_libvirt.wire`` logger at DEBUG.

Turn it on like any logger::

    import logging
    logging.basicConfig()
    logging.getLogger("qga_libvirt.wire").setLevel(logging.DEBUG)

(``qga --trace`` or ``QGA_TRACE=1 qga ...`` does that for the command line.) Each call
logs two lines, the request going out and what came back, with the target and the time
the call took::

    -> socket /run/qga.sock guest-set-user-password {"username": "root", "password": "<secret>"}
    <- socket /run/qga.sock guest-set-user-password 12.3 ms: return {}

Secrets never reach the trace: passwords and key material (SSH keys, in requests and
replies) are replaced by ``<secret>``, and bulk data (file contents, exec input and
output) by its size. Long strings are cut. The connection's own resynchronisation
(``guest-sync-delimited`` and ``guest-sync`` sent by a transport) is not traced: these
lines are the calls made through :class:`~qga_libvirt.GuestAgent`.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Final

__all__ = ["LOGGER_NAME", "describe_reply", "describe_request", "scrub"]

LOGGER_NAME: Final = "qga_libvirt.wire"
log = logging.getLogger(LOGGER_NAME)

SECRET = "<secret>"
_SECRET_WORDS: Final = ("password", "passwd", "secret", "token", "passphrase", "key")
"""A member whose name contains one of these holds a secret (``keys``: SSH key material)."""
_BULK_KEYS: Final = frozenset({"buf-b64", "input-data", "out-data", "err-data"})
"""Base64 members that carry data, not meaning: shown by size."""
MAX_STRING: Final = 200
MAX_ITEMS: Final = 20


def _secret(key: str) -> bool:
    lowered = key.lower()
    return any(word in lowered for word in _SECRET_WORDS)


def _base64_size(text: str) -> int:
    return len(text) * 3 // 4 - text[-2:].count("=")


def scrub(value: Any, key: str | None = None) -> Any:
    """``value`` (a request's arguments or a reply's value) fit for a log: no secret,
    no bulk data, no string longer than :data:`MAX_STRING`, no list longer than
    :data:`MAX_ITEMS`."""
    if key is not None and _secret(key):
        if isinstance(value, list):
            return f"{SECRET} x{len(value)}"
        return SECRET
    if key in _BULK_KEYS and isinstance(value, str):
        return f"<{_base64_size(value)} bytes>"
    if isinstance(value, dict):
        return {k: scrub(v, str(k)) for k, v in value.items()}
    if isinstance(value, list):
        shown = [scrub(item) for item in value[:MAX_ITEMS]]
        if len(value) > MAX_ITEMS:
            shown.append(f"... {len(value) - MAX_ITEMS} more")
        return shown
    if isinstance(value, str) and len(value) > MAX_STRING:
        return f"{value[:MAX_STRING]}... ({len(value)} chars)"
    return value


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=repr)


def describe_request(target: str, command: str, arguments: Any) -> str:
    """The trace line of a request going out."""
    shown = "" if not arguments else " " + _json(scrub(arguments))
    return f"-> {target} {command}{shown}"


def describe_reply(
    target: str,
    command: str,
    seconds: float,
    *,
    value: Any = None,
    error: tuple[str, str] | None = None,
    failure: BaseException | None = None,
) -> str:
    """The trace line of what came back: a value, an agent error, or a failure."""
    head = f"<- {target} {command} {seconds * 1000:.1f} ms: "
    if failure is not None:
        return f"{head}{type(failure).__name__}: {failure}"
    if error is not None:
        error_class, desc = error
        return f"{head}error {error_class}: {scrub(desc)}"
    return f"{head}return {_json(scrub(value))}"
