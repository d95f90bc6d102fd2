"""File transfer: whole files and streams, in chunks sized for the backend.

The agent reads and writes through handles, a chunk per call, base64 on the wire. The
chunk size follows the transport's limits (libvirt: 64 KiB requests, ~3 MiB replies), so
callers never meet them; memory stays bounded by the chunk size for streams, whatever
the file size. Handles are always closed, also on errors. A failed transfer raises
:class:`~qga_libvirt.errors.TransferError` saying how many bytes reached the other side,
and a download never leaves a partial file under its final name.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO, Final

from ..commands import Commands
from ..errors import AgentCommandError, GuestAgentError, TransferError
from ..models import SeekWhence
from ..transports.base import Transport

__all__ = ["READ_CHUNK", "WRITE_CHUNK", "FileOps", "Progress"]

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


class FileOps(Commands):
    """Whole-file and streamed transfer; mixed into :class:`~qga_libvirt.GuestAgent`."""

    transport: Transport

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
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
        done = 0
        try:
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
    ) -> int:
        """Write ``data`` to a guest file (created or truncated, or appended to).

        Returns the byte count. Raises :class:`TransferError` saying how many bytes were
        written when it fails part-way.
        """
        view = memoryview(data)
        chunk = self.write_chunk
        return self._write_chunks(
            path,
            (view[i : i + chunk] for i in range(0, len(view), chunk)),
            len(data),
            append=append,
            progress=progress,
        )

    def upload(
        self,
        local_path: str | os.PathLike[str],
        guest_path: str,
        *,
        append: bool = False,
        progress: Progress | None = None,
    ) -> int:
        """Copy a local file to the guest, streamed (memory bounded by one chunk).

        Raises: as :meth:`write_file`; OSError for local file errors.
        """
        with open(local_path, "rb") as source:
            total = os.fstat(source.fileno()).st_size
            return self._write_chunks(
                guest_path,
                _chunks(source, self.write_chunk),
                total,
                append=append,
                progress=progress,
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
