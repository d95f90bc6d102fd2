"""Run a command in the guest and wait for it: ``run``, ``run_shell``, ``collect``.

guest-exec starts a process and returns its pid; guest-exec-status reports it, once it
has exited, with its exit code and captured output. The agent forgets the process the
first time it reports it exited, so that one reply carries the only copy of the output.
This module makes sure it is never thrown away unnoticed:

- Polling starts after :data:`FIRST_POLL` and backs off (x2) to :data:`POLL_CEILING`:
  ``/bin/true`` completes in a few milliseconds, a long command costs few calls.
- A status call may take its time: each waits at least :data:`STATUS_TIMEOUT` for its
  reply, whatever ``run(timeout=)`` says, since a reply given up on is a reply lost
  (the raw-socket backend resynchronises and drops it; libvirt drops it too).
- If a status reply is lost anyway (transport timeout, connection lost), the status is
  asked once more: "still running" or the exit status mean nothing was lost; the agent
  saying it does not know the pid means the lost reply carried the output, and
  :class:`~qga_libvirt.errors.OutputLostError` (with the pid) says so. It is raised,
  never swallowed.
- Through libvirt a reply above ~4 MiB is dropped (and the output with it), and one
  above 10 MiB breaks the agent channel until the domain restarts. So on a backend with
  a reply limit (``transport.max_reply_bytes``), output is captured in guest files: the
  command runs as ``/bin/sh -c 'exec "$@" >OUT 2>ERR'`` (``exec``: same pid, its own exit
  code or signal), the status replies stay tiny, and the files are read back in chunks
  the backend carries (:meth:`~qga_libvirt.operations.files.FileOps.iter_file`), then
  removed. If reading them fails they are kept, and the error names them. This needs a
  POSIX guest with ``/bin/sh`` (asked once with guest-get-osinfo); a Windows guest
  through libvirt is captured by the agent, and output beyond ~2 MiB per call raises
  OutputLostError (``capture_via`` forces either way).

Each stream is kept up to :data:`OUTPUT_LIMIT` bytes (the agent's own capture limit);
beyond that the ``*_truncated`` flags are set, on both paths.
"""

from __future__ import annotations

import contextlib
import secrets
import shlex
import threading
import time
import weakref
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Literal, Self

from pydantic import BaseModel, ConfigDict

from ..commands import Commands
from ..errors import (
    AgentCommandError,
    AgentTimeoutError,
    CommandFailedError,
    CommandNotFoundError,
    CommandTimeoutError,
    ConnectionLostError,
    GuestAgentError,
    Hint,
    OutputLostError,
    Remedy,
    ReplyTooLargeError,
)
from ..models import Base64Bytes, ExecStatus
from ..transports.base import Transport

if TYPE_CHECKING:
    from .files import Progress

__all__ = [
    "FIRST_POLL",
    "OUTPUT_LIMIT",
    "POLL_CEILING",
    "SHELL",
    "STATUS_TIMEOUT",
    "CaptureVia",
    "RunOps",
    "RunResult",
]

FIRST_POLL: Final = 0.0005
"""Seconds before the first guest-exec-status; each next wait doubles. (``/bin/true``
on a local agent: 0.5 ms gives a 1.8-2 ms median, 1 ms 2.4-2.7 ms, measured.)"""
POLL_CEILING: Final = 0.25
"""The longest wait between two guest-exec-status calls."""
STATUS_TIMEOUT: Final = 60.0
"""The least time a guest-exec-status call waits for its reply (it may carry 32 MiB)."""
OUTPUT_LIMIT: Final = 16 << 20
"""Bytes kept per stream: the agent's capture limit, also applied to captured files."""
SHELL: Final = "/bin/sh"
"""The guest shell of :meth:`RunOps.run_shell` and of output capture in files."""

CaptureVia = Literal["auto", "agent", "files"]
"""How output is captured: by the agent (in its status reply), in guest files, or
"auto": files where the backend limits replies (libvirt) and the guest is POSIX."""

_TO_FILES: Final = 'o=$1 e=$2; shift 2; exec "$@" >"$o" 2>"$e"'
_TO_FILES_FROM_FILE: Final = 'o=$1 e=$2 i=$3; shift 3; exec "$@" <"$i" >"$o" 2>"$e"'
_REMOVE: Final = 'exec rm -f -- "$@"'
_REAP_WAIT: Final = 10.0  # seconds to wait for our own rm to finish
_STDERR_IN_MESSAGE: Final = 400  # characters of stderr quoted by CommandFailedError


class RunResult(BaseModel):
    """A finished guest process: how it ended and what it wrote.

    ``stdout``/``stderr`` are bytes (empty when not captured; base64 in JSON dumps);
    :meth:`stdout_text` decodes them (Windows guests: pass their code page, e.g.
    ``"cp850"`` or ``"utf-16-le"``). ``exitcode`` is None when a signal (``signal``)
    ended the process. ``duration`` is seconds from the start to the status that showed
    the exit, so it is precise to the polling interval.
    """

    model_config = ConfigDict(frozen=True)

    argv: tuple[str, ...]
    pid: int
    exitcode: int | None
    signal: int | None
    stdout: Base64Bytes = b""
    stderr: Base64Bytes = b""
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    duration: float

    @property
    def ok(self) -> bool:
        """Exited with code 0."""
        return self.exitcode == 0 and self.signal is None

    def stdout_text(self, encoding: str = "utf-8", errors: str = "replace") -> str:
        """``stdout`` decoded; undecodable bytes become U+FFFD unless ``errors`` says otherwise."""
        return self.stdout.decode(encoding, errors)

    def stderr_text(self, encoding: str = "utf-8", errors: str = "replace") -> str:
        """``stderr`` decoded, as :meth:`stdout_text`."""
        return self.stderr.decode(encoding, errors)

    def describe(self) -> str:
        """How it ended, in words: ``exit code 3``, ``killed by signal 9``."""
        if self.signal is not None:
            return f"killed by signal {self.signal}"
        return f"exit code {self.exitcode}"


@dataclass(frozen=True)
class _Started:
    """What :meth:`RunOps.collect` needs to finish a process :meth:`RunOps.run` started."""

    argv: tuple[str, ...]
    started: float
    files: tuple[str, ...] = ()  # stdout, stderr[, stdin] in the guest: capture in files
    capture: bool = True


class _State:
    """Per transport: processes started and not yet collected; the guest kind."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.pending: dict[int, _Started] = {}
        self.posix: bool | None = None


_STATES: weakref.WeakKeyDictionary[Transport, _State] = weakref.WeakKeyDictionary()
_STATES_LOCK = threading.Lock()


class RunOps(Commands):
    """Run a command in the guest and wait for it.

    Mixed into :class:`~qga_libvirt.GuestAgent`.
    """

    transport: Transport
    timeout: float
    run_temp_dir: str = "/tmp"
    """Guest directory for output captured in files (see the module docs)."""

    if TYPE_CHECKING:  # provided by GuestAgent and FileOps, its other bases

        @property
        def target(self) -> str: ...
        def with_timeout(self, timeout: float) -> Self: ...
        def iter_file(self, path: str, *, progress: Progress | None = None) -> Iterator[bytes]: ...
        def write_file(
            self, path: str, data: bytes, *, append: bool = False, progress: Progress | None = None
        ) -> int: ...

    def run(
        self,
        argv: Sequence[str],
        *,
        input: bytes | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float | None = None,
        capture: bool = True,
        check: bool = False,
        capture_via: CaptureVia = "auto",
    ) -> RunResult:
        """Run ``argv`` in the guest, wait for it to end, and return its result.

        ``argv[0]`` is the program (a path, or a name looked up in the agent's PATH); no
        shell is involved (:meth:`run_shell` for a command line). ``input`` is fed to
        stdin; ``env`` replaces the whole environment. With ``capture`` stdout and stderr
        are kept (up to :data:`OUTPUT_LIMIT` each). ``timeout`` bounds the wait for the
        process (None: no bound); a status reply already on its way is still awaited.
        ``capture_via``: see :data:`CaptureVia` and the module docs (in files, a program
        that cannot be started ends with exit code 127 and the shell's message on
        stderr; by the agent, exec fails with AgentCommandError).

        Raises:
            CommandTimeoutError: still running after ``timeout``; ``.pid`` for
                :meth:`collect`.
            CommandFailedError: ``check`` and it exited non-zero or was killed
                (``.result`` holds the output).
            OutputLostError: the output did not come back (see the module docs).
            AgentCommandError: the agent could not start it (no such program by the
                agent; GuestFrozenError while the filesystems are frozen).
            RequestTooLargeError: ``input`` is too large for the backend's requests
                (libvirt, with output captured by the agent).
            GuestAgentError: as every call.
        """
        if isinstance(argv, str):
            raise TypeError("argv is a sequence of arguments; use run_shell() for a command line")
        args = tuple(argv)
        if not args:
            raise ValueError("argv is empty: give at least the program to run")
        files = self._capture_files(input) if capture and self._in_files(capture_via) else ()
        started = time.monotonic()
        if not files:
            pid = self.exec(args[0], args[1:], env=env, input=input, capture_output=capture)
        else:
            script, inline = _TO_FILES, input
            try:
                if len(files) == 3:
                    assert input is not None
                    self.write_file(files[2], input)
                    script, inline = _TO_FILES_FROM_FILE, None
                pid = self.exec(
                    SHELL, ["-c", script, "qga-run", *files, *args], env=env, input=inline
                )
            except BaseException:
                self._remove(files)
                raise
        job = _Started(args, started, files, capture)
        state = self._run_state()
        with state.lock:
            state.pending[pid] = job
        return self._finish(pid, job, timeout, check)

    def run_shell(
        self,
        command: str,
        *,
        input: bytes | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float | None = None,
        capture: bool = True,
        check: bool = False,
        capture_via: CaptureVia = "auto",
    ) -> RunResult:
        """Run a shell command line through ``/bin/sh -c`` (POSIX guests); as :meth:`run`.

        The line is the shell's: pipes, redirections, globbing and variables work, and
        quoting is the caller's business (:func:`shlex.quote` for values).

        Raises: as :meth:`run`.
        """
        return self.run(
            [SHELL, "-c", command],
            input=input,
            env=env,
            timeout=timeout,
            capture=capture,
            check=check,
            capture_via=capture_via,
        )

    def collect(self, pid: int, *, timeout: float | None = None, check: bool = False) -> RunResult:
        """Wait again for a process that outlived ``run(timeout=)``, and return its result.

        ``pid`` is :attr:`CommandTimeoutError.pid <qga_libvirt.errors.CommandTimeoutError>`
        (or any guest-exec pid: a process this agent object did not start has an empty
        ``argv`` and its ``duration`` counts from this call; its output is what the agent
        captured).

        Raises: as :meth:`run`; AgentCommandError when the agent does not know the pid
        (never started, or already collected).
        """
        state = self._run_state()
        with state.lock:
            job = state.pending.get(pid)
        if job is None:
            job = _Started((), time.monotonic())
        return self._finish(pid, job, timeout, check)

    # --- waiting ----------------------------------------------------------------------

    def _finish(self, pid: int, job: _Started, timeout: float | None, check: bool) -> RunResult:
        status, ended = self._wait(pid, job, timeout)
        state = self._run_state()
        with state.lock:
            state.pending.pop(pid, None)
        if job.files:
            out, out_cut, err, err_cut = self._read_files(pid, job)
        else:
            out, err = status.out_data or b"", status.err_data or b""
            out_cut, err_cut = bool(status.out_truncated), bool(status.err_truncated)
        result = RunResult(
            argv=job.argv,
            pid=pid,
            exitcode=status.exitcode,
            signal=status.signal,
            stdout=out,
            stderr=err,
            stdout_truncated=out_cut,
            stderr_truncated=err_cut,
            duration=ended - job.started,
        )
        if check and not result.ok:
            raise CommandFailedError(
                f"{_show(job.argv, pid)} failed in {self.target}: {result.describe()}"
                + _stderr_tail(result),
                result=result,
                target=self.target,
                command=Commands.exec.wire,
            )
        return result

    def _wait(self, pid: int, job: _Started, timeout: float | None) -> tuple[ExecStatus, float]:
        """The exited status, and when it came."""
        deadline = None if timeout is None else time.monotonic() + timeout
        poller = self.with_timeout(max(self.timeout, STATUS_TIMEOUT))
        delay = FIRST_POLL
        while True:
            pause = delay if deadline is None else min(delay, deadline - time.monotonic())
            if pause > 0:
                time.sleep(pause)
            status = self._status(poller, pid, job)
            if status.exited:
                return status, time.monotonic()
            if deadline is not None and time.monotonic() >= deadline:
                assert timeout is not None
                raise CommandTimeoutError(
                    f"{_show(job.argv, pid)} is still running in {self.target} after "
                    f"{timeout:g} s (the agent keeps its output until it is collected)",
                    hint=Hint(
                        Remedy.COLLECT,
                        f"collect({pid}) waits for it again and returns its output; "
                        f"run(['kill', '{pid}']) stops it",
                        {"pid": pid},
                    ),
                    pid=pid,
                    argv=job.argv,
                    timeout=timeout,
                    target=self.target,
                    command=Commands.exec_status.wire,
                )
            delay = min(delay * 2, POLL_CEILING)

    def _status(self, poller: RunOps, pid: int, job: _Started) -> ExecStatus:
        """One guest-exec-status; a lost reply is asked again or reported, never ignored."""
        try:
            return poller.exec_status(pid)
        except ReplyTooLargeError as exc:
            raise self._lost(pid, job, exc, certain=True, too_large=True) from exc
        except (AgentTimeoutError, ConnectionLostError) as exc:
            first: GuestAgentError = exc
        try:
            return poller.exec_status(pid)
        except AgentCommandError as exc:
            if "pid" not in exc.desc:
                raise
            # The agent forgot the pid: the reply we lost said it had exited.
            with self._run_state().lock:
                self._run_state().pending.pop(pid, None)
            raise self._lost(pid, job, first, certain=True) from first
        except GuestAgentError as exc:
            raise self._lost(pid, job, first, certain=False) from exc

    def _lost(
        self,
        pid: int,
        job: _Started,
        cause: GuestAgentError,
        *,
        certain: bool,
        too_large: bool = False,
    ) -> OutputLostError:
        kept = job.files[:2]
        what = "output" if job.capture and not kept else "exit status"
        hint: Hint | None = None
        if too_large:
            why = (
                "its output was larger than the backend carries in one reply, and the "
                "agent has forgotten the process"
            )
            hint = Hint(
                Remedy.CAPTURE_IN_FILES,
                "capture it in files (capture_via='files', POSIX guests) or use the socket backend",
            )
        elif certain:
            why = "the status reply that carried it was lost in transport"
        else:
            why = "the status reply was lost in transport and the agent cannot be asked again now"
            hint = Hint(
                Remedy.COLLECT_LATER,
                f"collect({pid}) gets it if the agent still has it",
                {"pid": pid},
            )
        if kept:
            hint = Hint(
                Remedy.READ_GUEST_FILES,
                f"its output is in {' and '.join(kept)} in the guest (read_file them, then "
                "remove them)",
                {"files": kept},
            )
        return OutputLostError(
            f"the {what} of {_show(job.argv, pid)} in {self.target} is "
            f"{'lost' if certain else 'maybe lost'}: {why} [{cause}]",
            hint=hint,
            pid=pid,
            guest_files=kept,
            certain=certain,
            cause=cause,
            target=self.target,
            command=Commands.exec_status.wire,
        )

    # --- output in guest files --------------------------------------------------------

    def _in_files(self, capture_via: CaptureVia) -> bool:
        if capture_via == "auto":
            return self.transport.max_reply_bytes is not None and self._posix_guest()
        if capture_via not in ("agent", "files"):
            raise ValueError(f"capture_via must be 'auto', 'agent' or 'files', not {capture_via!r}")
        return capture_via == "files"

    def _posix_guest(self) -> bool:
        state = self._run_state()
        if state.posix is None:
            try:
                state.posix = self.get_osinfo().id != "mswindows"
            except CommandNotFoundError:  # agents before 2.10: Windows ones say so
                state.posix = True
        return state.posix

    def _capture_files(self, input: bytes | None) -> tuple[str, ...]:
        base = f"{self.run_temp_dir.rstrip('/')}/qga-run-{secrets.token_hex(8)}"
        limit = self.transport.max_request_bytes
        if input is not None and limit is not None and len(input) * 4 // 3 > limit // 2:
            return (f"{base}.out", f"{base}.err", f"{base}.in")  # input uploaded in chunks
        return (f"{base}.out", f"{base}.err")

    def _read_files(self, pid: int, job: _Started) -> tuple[bytes, bool, bytes, bool]:
        try:
            out, out_cut = self._read_capped(job.files[0])
            err, err_cut = self._read_capped(job.files[1])
        except GuestAgentError as exc:
            raise OutputLostError(
                f"the output of {_show(job.argv, pid)} could not be read back from "
                f"{self.target} [{exc}]",
                hint=Hint(
                    Remedy.READ_GUEST_FILES,
                    f"it is kept in {job.files[0]} and {job.files[1]} in the guest "
                    "(read_file them, then remove them)",
                    {"files": job.files[:2]},
                ),
                pid=pid,
                guest_files=job.files[:2],
                cause=exc,
                target=self.target,
                command=exc.command,
            ) from exc
        self._remove(job.files)
        return out, out_cut, err, err_cut

    def _read_capped(self, path: str) -> tuple[bytes, bool]:
        parts: list[bytes] = []
        size = 0
        chunks = self.iter_file(path)
        try:
            for chunk in chunks:
                parts.append(chunk)
                size += len(chunk)
                if size > OUTPUT_LIMIT:
                    break
        finally:
            close = getattr(chunks, "close", None)  # a generator: closes the guest handle
            if close is not None:
                close()
        return b"".join(parts)[:OUTPUT_LIMIT], size > OUTPUT_LIMIT

    def _remove(self, paths: Sequence[str]) -> None:
        """Remove our temp files; best effort, the result matters more than the cleanup."""
        with contextlib.suppress(GuestAgentError):
            pid = self.exec(SHELL, ["-c", _REMOVE, "qga-rm", *paths])
            deadline = time.monotonic() + _REAP_WAIT
            delay = FIRST_POLL
            while not self.exec_status(pid).exited and time.monotonic() < deadline:
                time.sleep(delay)
                delay = min(delay * 2, POLL_CEILING)

    def _run_state(self) -> _State:
        with _STATES_LOCK:
            state = _STATES.get(self.transport)
            if state is None:
                state = _STATES[self.transport] = _State()
            return state


def _show(argv: Sequence[str], pid: int) -> str:
    return f"{shlex.join(argv)!r} (pid {pid})" if argv else f"guest process {pid}"


def _stderr_tail(result: RunResult) -> str:
    text = result.stderr_text().strip()
    if not text:
        return ""
    if len(text) > _STDERR_IN_MESSAGE:
        text = "..." + text[-_STDERR_IN_MESSAGE:]
    return f"; stderr: {text}"
