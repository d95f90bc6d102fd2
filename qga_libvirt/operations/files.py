"""File transfer: whole files and streams, in chunks sized for the backend.

The agent reads and writes through handles, a chunk per call, base64 on the wire. The
chunk size follows the transport's limits (libvirt: 64 KiB requests, ~3 MiB replies), so
callers never meet them; memory stays bounded by the chunk size for streams, whatever
the file size. Handles are always closed, also on errors. A failed transfer raises
:class:`~qga_libvirt.errors.TransferError` saying how many bytes reached the other side.

Nothing is ever left half-written under its final name, whatever stops a transfer
(an error, Ctrl-C, the process killed):

- A download goes to a temporary file beside the destination, renamed into place when
  complete; it gets the mode the destination had, or the umask's for a new file.
- An upload (:meth:`FileOps.upload`, :meth:`FileOps.write_file`) goes to a temporary
  file beside the destination in the guest (``.NAME.qga-XXXX.part``), created with its
  final mode before any data lands, and renamed into place by ``mv`` in the guest
  (guest-exec, POSIX guests) once complete; on failure it is removed. The old content
  stays until then. Where the guest cannot run ``mv`` (Windows, guest-exec disabled)
  the upload refuses and says so: ``atomic=False`` writes in place instead (the
  destination is then truncated first, and partial on failure).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO, Final

from ..commands import Commands
from ..errors import AgentCommandError, GuestAgentError, Hint, Remedy, TransferError
from ..models import SeekWhence
from .base import AgentBase

__all__ = ["DEFAULT_MODE", "READ_CHUNK", "WRITE_CHUNK", "FileOps", "Progress"]

DEFAULT_MODE: Final = 0o644
"""Mode of a new guest file written atomically, when no ``mode=`` is given."""
# Create the temporary file empty and private, then give it its final mode (the
# destination's when it exists, unless one is asked): before any data lands.
_PREPARE: Final = (
    't=$1 m=$2 d=$3; umask 077; : >"$t" || exit 1; '
    'if [ -z "$m" ]; then m=$(stat -c %a "$d" 2>/dev/null) || m=644; fi; chmod "$m" "$t"'
)
_IN_PLACE: Final = Hint(
    Remedy.WRITE_IN_PLACE, "write in place instead (atomic=False, and no mode=)"
)
_CHMOD: Final = 'exec chmod "$1" "$2"'
_RENAME: Final = 'exec mv -f -- "$1" "$2"'
_DISCARD: Final = 'exec rm -f -- "$1"'


Progress = Callable[[int, int | None], None]
"""Called after each chunk with (bytes done, total bytes or None when unknown)."""

READ_CHUNK: Final = 2 << 20
"""Bytes per guest-file-read where the backend has no reply limit (raw socket).

Measured on the host's qemu-ga (``bench/files.py``): throughput is flat from 1 to 8 MiB
and drops at 16 MiB; CPU per MiB, agent and client alike, is lowest at 2 MiB; the peak
memory of a download grows with it (a 4 MiB chunk is a 5.6 MiB reply, copied a few times
while it is framed and decoded)."""
WRITE_CHUNK: Final = 2 << 20
"""Bytes per guest-file-write where the backend has no request limit (raw socket).

Measured: the agent's JSON parser sets the pace whatever the size; the client's CPU per
MiB is lowest at 1-2 MiB and grows from 3 MiB on."""
_ENVELOPE: Final = 256  # JSON around the base64 payload: command, handle, count, id


def _fit(limit: int | None, default: int) -> int:
    """The largest chunk whose base64 (4/3 of it) plus envelope stays within ``limit``."""
    if limit is None:
        return default
    return min(default, (limit - _ENVELOPE) // 4 * 3)


class FileOps(AgentBase):
    """Whole-file and streamed transfer; mixed into :class:`~qga_libvirt.GuestAgent`."""

    @property
    def read_chunk(self) -> int:
        """Bytes read per call on this backend."""
        return _fit(self.transport.max_reply_bytes, READ_CHUNK)

    @property
    def write_chunk(self) -> int:
        """Bytes written per call on this backend."""
        return _fit(self.transport.max_request_bytes, WRITE_CHUNK)

    # --- reading ----------------------------------------------------------------------

    def read_file(self, path: str, *, progress: Progress | None = None) -> bytes:
        """The whole content of a guest file.

        Raises:
            AgentCommandError: the guest could not open it (message from the guest).
            TransferError: reading failed part-way.
        """
        return b"".join(self.iter_file(path, progress=progress))

    def iter_file(self, path: str, *, progress: Progress | None = None) -> Iterator[bytes]:
        """A guest file's content, chunk by chunk (memory bounded by one chunk).

        Raises: as :meth:`read_file`.
        """
        where = self.transport.target
        handle = self.file_open(path, "rb")
        done, total = 0, None
        try:
            if progress is not None:
                total = self._size(handle)
            chunk = self.read_chunk
            while True:
                try:
                    read = self.file_read(handle, chunk)
                except GuestAgentError as exc:
                    raise _partial("reading", path, done, total, where, exc) from exc
                done += read.count
                if read.count:
                    yield read.data
                if progress is not None:
                    progress(done, total)
                if read.eof or not read.count:
                    return
        finally:
            self._close_quietly(handle)

    def download(
        self,
        guest_path: str,
        local_path: str | os.PathLike[str],
        *,
        progress: Progress | None = None,
    ) -> int:
        """Copy a guest file to a local path; returns the byte count.

        The data goes to a temporary file beside ``local_path``, renamed into place only
        when complete: a failed download never leaves a partial file under that name.

        Raises: as :meth:`read_file`; OSError for local file errors.
        """
        target = Path(local_path)
        try:
            mode = target.stat().st_mode & 0o7777
        except OSError:
            mode = 0o666 & ~_umask()
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
        done = 0
        try:
            os.fchmod(fd, mode)
            with os.fdopen(fd, "wb") as out:
                for data in self.iter_file(guest_path, progress=progress):
                    out.write(data)
                    done += len(data)
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        return done

    # --- writing ----------------------------------------------------------------------

    def write_file(
        self,
        path: str,
        data: bytes,
        *,
        append: bool = False,
        progress: Progress | None = None,
        mode: int | None = None,
        atomic: bool = True,
    ) -> int:
        """Write ``data`` to a guest file (created or replaced, or appended to).

        ``atomic`` (not with ``append``): the file is replaced only once all of ``data``
        is in the guest (see the module docs); needs guest-exec and a POSIX shell.
        ``atomic=False`` writes in place. ``mode``: the file's permission bits, set
        before any data lands (default: the existing file's, else
        :data:`DEFAULT_MODE`; in place: the agent's for a new file).

        Returns the byte count.

        Raises:
            TransferError: writing failed part-way (how many bytes were written); when
                atomic, the destination is untouched.
            AgentCommandError: the guest could not open or rename the file.
            GuestAgentError: atomic, and the guest cannot rename through guest-exec (the
                message says to write in place with ``atomic=False``).
        """
        view = memoryview(data)
        chunk = self.write_chunk
        return self._write(
            path,
            (view[i : i + chunk] for i in range(0, len(view), chunk)),
            len(data),
            append=append,
            progress=progress,
            mode=mode,
            atomic=atomic,
        )

    def upload(
        self,
        local_path: str | os.PathLike[str],
        guest_path: str,
        *,
        append: bool = False,
        progress: Progress | None = None,
        mode: int | None = None,
        atomic: bool = True,
        source: BinaryIO | None = None,
    ) -> int:
        """Copy a local file (or the open binary ``source``, e.g. stdin; then
        ``local_path`` only names it) to the guest, streamed (memory bounded by one
        chunk); ``mode`` and ``atomic`` as :meth:`write_file`.

        Raises: as :meth:`write_file`; OSError for local file errors.
        """
        if source is not None:
            return self._write(
                guest_path,
                _chunks(source, self.write_chunk),
                None,
                append=append,
                progress=progress,
                mode=mode,
                atomic=atomic,
            )
        with open(local_path, "rb") as opened:
            total = os.fstat(opened.fileno()).st_size
            return self._write(
                guest_path,
                _chunks(opened, self.write_chunk),
                total,
                append=append,
                progress=progress,
                mode=mode,
                atomic=atomic,
            )

    def _write(
        self,
        path: str,
        chunks: Iterator[bytes] | Iterator[memoryview],
        total: int | None,
        *,
        append: bool,
        progress: Progress | None,
        mode: int | None,
        atomic: bool,
    ) -> int:
        if append or not atomic:
            if mode is not None:
                self._guest_shell(
                    path, _CHMOD, "setting the mode of", f"{mode:o}", path, touch=path
                )
            return self._write_chunks(path, chunks, total, append=append, progress=progress)
        head, _, name = path.rpartition("/")
        temp = f"{head}/.{name}.qga-{secrets.token_hex(4)}.part"
        self._guest_shell(
            path,
            _PREPARE,
            "creating a temporary file for",
            temp,
            "" if mode is None else f"{mode:o}",
            path,
        )
        try:
            done = self._write_chunks(temp, chunks, total, append=False, progress=progress)
            self._guest_shell(path, _RENAME, "renaming the complete upload into", temp, path)
        except BaseException:
            with contextlib.suppress(Exception):  # the error on its way matters more
                self._guest_shell(path, _DISCARD, "removing the partial upload of", temp)
            raise
        return done

    def _guest_shell(self, path: str, script: str, doing: str, *args: str, touch: str = "") -> None:
        """Run one of our shell lines in the guest; its failure is an error naming ``path``.

        Raises:
            GuestAgentError: the guest cannot run it (not POSIX, guest-exec refused), or
                it failed.
        """
        where = self.transport.target
        if touch:  # in place: create it first, so that chmod has something to act on
            self._close_quietly(self.file_open(touch, "ab"))
        if not self._posix_guest():
            raise GuestAgentError(
                f"{doing} {path} on {where} needs a POSIX shell in the guest (guest-exec); "
                "this guest has none",
                hint=_IN_PLACE,
                target=where,
                command=Commands.exec.wire,
            )
        try:
            code = self._exec_and_wait(["/bin/sh", "-c", script, "qga-cp", *args])
        except AgentCommandError as exc:
            raise GuestAgentError(
                f"{doing} {path} on {where} needs guest-exec, which the agent refused ({exc.desc})",
                hint=_IN_PLACE,
                cause=exc,
                target=where,
                command=exc.command,
            ) from exc
        if code != 0:
            raise AgentCommandError(
                f"{doing} {path} on {where} failed in the guest (exit code {code}): is the "
                "directory there and writable, and the mode valid?",
                error_class="GenericError",
                desc=f"exit code {code}",
                target=where,
                command=Commands.exec.wire,
            )

    def _write_chunks(
        self,
        path: str,
        chunks: Iterator[bytes] | Iterator[memoryview],
        total: int | None,
        *,
        append: bool,
        progress: Progress | None,
    ) -> int:
        where = self.transport.target
        handle = self.file_open(path, "ab" if append else "wb")
        done = 0
        closed = False
        try:
            for chunk in chunks:
                try:
                    written = self.file_write(handle, bytes(chunk)).count
                except GuestAgentError as exc:
                    raise _partial("writing", path, done, total, where, exc) from exc
                done += written
                if written != len(chunk):
                    raise TransferError(
                        f"writing {path} on {where} stopped short: the guest took {written} "
                        f"of a {len(chunk)}-byte chunk; {done} of {_total(total)} bytes "
                        "were written (is its disk full?)",
                        transferred=done,
                        total=total,
                        path=path,
                        target=where,
                    )
                if progress is not None:
                    progress(done, total)
            closed = True
            self.file_close(handle)  # flushes: its failure is the transfer's
        finally:
            if not closed:
                self._close_quietly(handle)
        return done

    def _size(self, handle: int) -> int | None:
        """The size of an open file, or None for one that cannot seek (a pipe, a device).

        Raises:
            GuestAgentError: other than the agent refusing the seek.
        """
        try:
            total = self.file_seek(handle, 0, SeekWhence.END).position
        except AgentCommandError:  # "Illegal seek": asking for progress must not fail a read
            return None
        self.file_seek(handle, 0, SeekWhence.SET)
        return total

    def _close_quietly(self, handle: int) -> None:
        """Close a handle on an error path: the first error matters more than this one."""
        with contextlib.suppress(GuestAgentError):
            self.file_close(handle)


def _chunks(source: BinaryIO, size: int) -> Iterator[bytes]:
    while data := source.read(size):
        yield data


def _umask() -> int:
    """This process's umask, read without changing it where Linux tells it."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    old = os.umask(0o022)
    os.umask(old)
    return old


def _total(total: int | None) -> str:
    return "?" if total is None else str(total)


def _partial(
    what: str, path: str, done: int, total: int | None, target: str, exc: GuestAgentError
) -> TransferError:
    return TransferError(
        f"{what} {path} on {target} failed after {done} of {_total(total)} bytes: {exc}",
        transferred=done,
        total=total,
        path=path,
        cause=exc,
        target=target,
        command=exc.command,
    )
