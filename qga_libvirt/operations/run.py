"""Run a command in the guest and wait for it: ``run``, ``run_shell``, ``collect``.

guest-exec starts a process and returns its pid; guest-exec-status reports it, once it
has exited, with its exit code and captured output. The agent forgets the process the
first time it reports it exited, so that one reply carries the only copy of the output.
This module makes sure it is never thrown away unnoticed:

- Polling starts after :data:`FIRST_POLL` and backs off (x2) to :data:`POLL_CEILING`:
  ``/bin/true`` completes in a few milliseconds, a long command costs few calls.
- ``run(timeout=)`` bounds the whole call: each status call waits for its reply until
  the deadline (at most :data:`STATUS_TIMEOUT`, at least :data:`MIN_STATUS_WAIT`). A
  process still running then raises :class:`~qga_libvirt.errors.CommandTimeoutError`
  with a :class:`RunHandle` (plain data, usable from another agent object or process)
  for :meth:`RunOps.collect` or :meth:`RunOps.cancel`; a status that could not be had in
  time is reported as such in the same error.
- If a status reply is lost (transport timeout, connection lost, the agent restarting),
  the agent is waited for (until the deadline, or :data:`AGENT_RESTART_WAIT`) and the
  status asked once more: "still running" or the exit status mean nothing was lost;
  the agent saying it does not know the pid means the lost reply carried the status (or
  the agent restarted and forgot the process), and
  :class:`~qga_libvirt.errors.OutputLostError` says so, naming the guest files that
  still hold the output. It is raised, never swallowed.
- Through libvirt a reply above ~4 MiB is dropped (and the output with it), and one
  above 10 MiB breaks the agent channel until the domain restarts. So on a backend with
  a reply limit (``transport.max_reply_bytes``), output of a POSIX guest is always
  captured in guest files (``capture_via="agent"`` is refused there): a shell wrapper
  runs the command with ``exec`` (same pid, its own exit code or signal), its output
  goes to ``/tmp/qga-run/PID.out`` and ``PID.err`` (:data:`CAPTURE_DIR`: 0700, files
  0600, the agent's user only), the status replies stay tiny, and the files are read
  back in chunks the backend carries, then removed, on every path (success, error,
  timeout, interruption, :meth:`RunOps.cancel`). Files of processes that ended more than
  :data:`STALE_MINUTES` ago are removed by the next run. If reading them fails they are
  kept, and the error names them. A Windows guest through libvirt is captured by the
  agent: its output must stay well under ~2 MiB per run.
- ``output=`` follows the output while the process runs (capture in files, read as the
  files grow, every :data:`STREAM_POLL` at most).
- Interrupted while waiting (KeyboardInterrupt, anything not a GuestAgentError), the
  guest process is killed and its files removed, unless ``keep=True``.

Each stream is kept up to :data:`OUTPUT_LIMIT` bytes (the agent's own capture limit);
beyond that the ``*_truncated`` flags are set, on both paths.
"""

from __future__ import annotations

import contextlib
import re
import secrets
import shlex
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Final, Literal

from pydantic import BaseModel, ConfigDict

from ..commands import Commands
from ..errors import (
    AgentCommandError,
    AgentTimeoutError,
    AgentUnreachableError,
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
from ..models import Base64Bytes, ExecStatus, SeekWhence
from ..transports.base import Transport
from .files import FileOps

__all__ = [
    "AGENT_RESTART_WAIT",
    "CAPTURE_DIR",
    "FIRST_POLL",
    "MIN_STATUS_WAIT",
    "NOT_FOUND",
    "NO_PERMISSION",
    "OUTPUT_LIMIT",
    "POLL_CEILING",
    "SHELL",
    "STALE_MINUTES",
    "STATUS_TIMEOUT",
    "STREAM_POLL",
    "CaptureVia",
    "OutputCallback",
    "RunHandle",
    "RunOps",
    "RunResult",
]

FIRST_POLL: Final = 0.0005
"""Seconds before the first guest-exec-status; each next wait doubles. (``/bin/true``
on a local agent: 0.5 ms gives a 1.8-2 ms median, 1 ms 2.4-2.7 ms, measured.)"""
POLL_CEILING: Final = 0.25
"""The longest wait between two guest-exec-status calls."""
STATUS_TIMEOUT: Final = 15.0
"""The longest a guest-exec-status call waits for its reply (it may carry 32 MiB, sent in
a second or so); less when ``run(timeout=)`` ends sooner. Not longer: a request the
agent lost (it restarted while the chardev stayed connected) looks like a slow reply."""
MIN_STATUS_WAIT: Final = 0.5
"""The least time a guest-exec-status call waits, even past ``run(timeout=)``."""
AGENT_RESTART_WAIT: Final = 60.0
"""How long ``run()`` without a timeout waits for an agent that went away to come back."""
STREAM_POLL: Final = 0.1
"""The longest wait between two reads of the output while it is followed (``output=``)."""
_STREAM_CHUNK: Final = 64 * 1024  # bytes per read of followed output
OUTPUT_LIMIT: Final = 16 << 20
"""Bytes kept per stream: the agent's capture limit, also applied to captured files."""
SHELL: Final = "/bin/sh"
"""The guest shell of :meth:`RunOps.run_shell` and of output capture in files."""

CaptureVia = Literal["auto", "agent", "files"]
"""How output is captured: by the agent (in its status reply), in guest files, or
"auto": files where the backend limits replies (libvirt) and the guest is POSIX."""

STALE_MINUTES: Final = 24 * 60
"""Capture files of processes that ended this many minutes ago are removed by the next
run that captures in files (time enough to :meth:`RunOps.collect` them)."""
CAPTURE_DIR: Final = "qga-run"
"""The private directory (mode 0700, in :attr:`RunOps.run_temp_dir`) of capture files."""

# The wrapper of capture in files: $1 the private directory, $2 an input file or "",
# $3 the number of KEY=VALUE environment entries that follow (-1: keep the agent's
# environment; else env -i sets only those), then the command. Output goes to
# DIR/$$.out and DIR/$$.err, named from the pid (``exec`` keeps it), so that any process
# that knows the pid finds them. They are 0600 in a 0700 directory of the agent's user;
# anything else there (a link, another owner) is refused with exit code 125. A program
# that cannot run ends as it does by the agent: 127 or 126 and NOT_FOUND or NO_PERMISSION.
_WRAPPER: Final = f"""d=$1 i=$2 n=$3; shift 3
umask 077
[ -d "$d" ] || mkdir -m 700 "$d" 2>/dev/null
if [ -L "$d" ] || [ ! -d "$d" ] || [ ! -O "$d" ]; then exit 125; fi
chmod 700 "$d" && exec >"$d/$$.out" 2>"$d/$$.err" || exit 125
for f in $(find "$d" -type f -mmin +{STALE_MINUTES} 2>/dev/null); do
  p=${{f##*/}}; p=${{p%.*}}; [ -d "/proc/$p" ] || rm -f -- "$f"
done
if [ -n "$i" ]; then exec <"$i"; rm -f -- "$i"; fi
k=$n; p=$1; for a; do [ "$k" -le 0 ] && {{ p=$a; break; }}; k=$((k - 1)); done
case $p in
*/*) [ -e "$p" ] || {{ echo "$p: {{NOT_FOUND}}" >&2; exit 127; }}
  [ -x "$p" ] && [ ! -d "$p" ] || {{ echo "$p: {{NO_PERMISSION}}" >&2; exit 126; }} ;;
*) command -v "$p" >/dev/null 2>&1 || {{ echo "$p: {{NOT_FOUND}}" >&2; exit 127; }} ;;
esac
[ "$n" -ge 0 ] && set -- env -i "$@"
exec "$@"
"""
NOT_FOUND: Final = "command not found"
"""stderr of a program that does not exist (exit code 127), on every capture path."""
NO_PERMISSION: Final = "permission denied"
"""stderr of a program that cannot be run (exit code 126), on every capture path."""
_WRAPPER_SCRIPT: Final = _WRAPPER.replace("{NOT_FOUND}", NOT_FOUND).replace(
    "{NO_PERMISSION}", NO_PERMISSION
)
_REMOVE: Final = 'exec rm -f -- "$@"'
_MKDIR: Final = 'umask 077; [ -d "$1" ] || mkdir -m 700 "$1"; [ ! -L "$1" ] && [ -O "$1" ]'
# Kill a process and its descendants (stopped first, so that it starts no more). $1 the
# pid; $2, when given, the file its stdout must be (else it is not ours: a recycled pid);
# the rest, files to remove.
_CANCEL: Final = (
    't() { echo "$1"; for c in $(cat /proc/"$1"/task/*/children 2>/dev/null); do t "$c"; '
    "done; }; p=$1 o=$2; shift; "
    'if [ -z "$o" ] || [ "$(readlink "/proc/$p/fd/1")" = "$o" ]; then '
    'kill -STOP "$p" 2>/dev/null && kill -KILL $(t "$p") 2>/dev/null; fi; '
    '[ $# -gt 1 ] && shift && rm -f -- "$o" "$@"; :'
)
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


class RunHandle(BaseModel):
    """A guest process started by :meth:`RunOps.run`: what it takes to finish it later.

    Plain data that outlives the agent object and the process that started the command:
    :meth:`dumps` it (JSON), :meth:`loads` it elsewhere, and give it to
    :meth:`RunOps.collect` (wait for the result) or :meth:`RunOps.cancel` (kill the
    process, remove its capture files) of any agent object of the same guest.
    :attr:`CommandTimeoutError.handle <qga_libvirt.errors.CommandTimeoutError>` is one.

    ``files``: the guest files holding its stdout and stderr (capture in files), empty
    when the agent captures them. ``started``: wall-clock time (``time.time()``).
    """

    model_config = ConfigDict(frozen=True)

    pid: int
    argv: tuple[str, ...] = ()
    files: tuple[str, ...] = ()
    capture: bool = True
    started: float = 0.0

    def dumps(self) -> str:
        """The handle as JSON text."""
        return self.model_dump_json()

    @classmethod
    def loads(cls, text: str | bytes) -> RunHandle:
        """A handle from :meth:`dumps`' text.

        Raises:
            ValueError: the text is not a handle.
        """
        return cls.model_validate_json(text)


OutputCallback = Callable[[str, bytes], None]
"""Called by :meth:`RunOps.run` with (``"stdout"`` or ``"stderr"``, bytes) as the output
grows while the process runs."""


class _State:
    """Per transport: processes started and not yet collected; the guest kind."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.pending: dict[int, RunHandle] = {}
        self.posix: bool | None = None


_STATES: weakref.WeakKeyDictionary[Transport, _State] = weakref.WeakKeyDictionary()
_STATES_LOCK = threading.Lock()


class RunOps(FileOps):
    """Run a command in the guest and wait for it.

    Mixed into :class:`~qga_libvirt.GuestAgent`; builds on file transfer (large input,
    capture files).
    """

    run_temp_dir: str = "/tmp"
    """Guest directory that holds the private :data:`CAPTURE_DIR` of capture files."""

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
        output: OutputCallback | None = None,
        keep: bool = False,
        on_start: Callable[[RunHandle], None] | None = None,
    ) -> RunResult:
        """Run ``argv`` in the guest, wait for it to end, and return its result.

        ``argv[0]`` is the program (a path, or a name looked up in the agent's PATH); no
        shell is involved (:meth:`run_shell` for a command line). ``input`` is fed to
        stdin; ``env`` replaces the whole environment. With ``capture`` stdout and stderr
        are kept (up to :data:`OUTPUT_LIMIT` each). ``timeout`` bounds the whole call
        (None: no bound). ``capture_via``: see :data:`CaptureVia` and the module docs.
        A program that does not exist ends with exit code 127 and ``PROG: command not
        found`` on stderr, one that cannot be run 126 and ``PROG: permission denied``, on
        every capture path.

        ``output``: called with each piece of stdout and stderr as the process writes it
        (captured in guest files, read as they grow; POSIX guests); the result holds the
        whole output too.

        Interrupted (KeyboardInterrupt, any exception that is not a GuestAgentError)
        while it waits, the guest process is killed and its capture files removed,
        unless ``keep``: it is then left running and the exception gets a note with its
        :class:`RunHandle`. ``on_start`` is called with the handle once the process runs.

        Through a backend that limits replies (libvirt), output is never captured by the
        agent for a POSIX guest: a status reply carrying it could exceed what the backend
        carries and break the agent channel until the domain restarts. A Windows guest
        has no other way: keep its output well under 2 MiB per run there.

        Raises:
            CommandTimeoutError: still running after ``timeout`` (it keeps running):
                ``.handle`` for :meth:`collect` or :meth:`cancel`.
            CommandFailedError: ``check`` and it exited non-zero or was killed
                (``.result`` holds the output).
            OutputLostError: the output did not come back (see the module docs).
            AgentCommandError: the agent could not start it (GuestFrozenError while the
                filesystems are frozen).
            RequestTooLargeError: ``input`` is too large for the backend's requests
                (libvirt, with output captured by the agent).
            GuestAgentError: as every call.
        """
        if isinstance(argv, str):
            raise TypeError("argv is a sequence of arguments; use run_shell() for a command line")
        args = tuple(argv)
        if not args:
            raise ValueError("argv is empty: give at least the program to run")
        deadline = None if timeout is None else time.monotonic() + timeout
        in_files = capture and (output is not None or self._in_files(capture_via))
        if output is not None and not self._posix_guest():
            raise ValueError("output= needs a POSIX guest: its output is read from guest files")
        started = time.time()
        if in_files:
            handle = self._start_in_files(args, input, env, started)
        else:
            try:
                pid = self.exec(args[0], args[1:], env=env, input=input, capture_output=capture)
            except AgentCommandError as exc:
                cannot = _cannot_start(args[0], exc.desc)
                if cannot is None:
                    raise
                code, words = cannot
                return self._checked(
                    RunResult(
                        argv=args,
                        pid=0,
                        exitcode=code,
                        signal=None,
                        stderr=f"{args[0]}: {words}\n".encode(),
                        duration=time.time() - started,
                    ),
                    check,
                )
            handle = RunHandle(pid=pid, argv=args, capture=capture, started=started)
        state = self._run_state()
        with state.lock:
            state.pending[handle.pid] = handle
        try:
            if on_start is not None:
                on_start(handle)
            return self._finish(handle, deadline, timeout, check, output)
        except GuestAgentError:
            raise
        except BaseException as exc:
            if keep:
                exc.add_note(
                    f"{_show(args, handle.pid)} goes on in {self.target}; its handle: "
                    f"{handle.dumps()}"
                )
            else:
                with contextlib.suppress(Exception):
                    self.cancel(handle)
            raise

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
        output: OutputCallback | None = None,
        keep: bool = False,
        on_start: Callable[[RunHandle], None] | None = None,
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
            output=output,
            keep=keep,
            on_start=on_start,
        )

    def collect(
        self, handle: RunHandle | int, *, timeout: float | None = None, check: bool = False
    ) -> RunResult:
        """Wait again for a process that outlived ``run(timeout=)``, and return its result.

        ``handle``: :attr:`CommandTimeoutError.handle
        <qga_libvirt.errors.CommandTimeoutError>` (also from another agent object or
        process: :meth:`RunHandle.loads`), or a pid. A pid this agent object did not
        start is looked for among the capture files where this backend captures in
        files; its ``argv`` is then empty.

        Raises: as :meth:`run`; AgentCommandError when the agent does not know the pid
        (never started, or already collected).
        """
        if isinstance(handle, RunHandle):  # we started it: a pid the agent forgot is lost
            with self._run_state().lock:
                self._run_state().pending.setdefault(handle.pid, handle)
        handle = self._handle(handle)
        deadline = None if timeout is None else time.monotonic() + timeout
        return self._finish(handle, deadline, timeout, check, None)

    def cancel(self, handle: RunHandle | int) -> None:
        """Kill a guest process :meth:`run` started (SIGKILL) and remove its capture files.

        A process that has already ended is only cleaned up; its result is dropped.
        Idempotent.

        Raises:
            GuestAgentError: the agent could not be asked (the files may remain: the next
                run that captures in files removes them after :data:`STALE_MINUTES`).
        """
        handle = self._handle(handle)
        state = self._run_state()
        with state.lock:
            state.pending.pop(handle.pid, None)
        known = True
        try:
            exited = self.exec_status(handle.pid).exited
        except AgentCommandError:
            known, exited = False, True  # collected already, or the agent restarted
        if handle.files:
            # The files say whether the pid is still ours: a recycled pid is left alone.
            self._exec_and_wait(
                [SHELL, "-c", _CANCEL, "qga-cancel", str(handle.pid), *handle.files]
            )
        elif not exited:
            self._exec_and_wait([SHELL, "-c", _CANCEL, "qga-cancel", str(handle.pid), ""])
        if known:  # let the agent forget it
            until = time.monotonic() + _REAP_WAIT
            with contextlib.suppress(AgentCommandError):
                while not self.exec_status(handle.pid).exited and time.monotonic() < until:
                    time.sleep(0.05)

    def _handle(self, handle: RunHandle | int) -> RunHandle:
        if isinstance(handle, RunHandle):
            return handle
        state = self._run_state()
        with state.lock:
            known = state.pending.get(handle)
        if known is not None:
            return known
        files: tuple[str, ...] = ()
        if self._in_files("auto"):
            base = f"{self._capture_dir()}/{handle}"
            files = (f"{base}.out", f"{base}.err")
        return RunHandle(pid=handle, files=files, started=time.time())

    def _started_elsewhere(self, handle: RunHandle) -> bool:
        """A bare pid whose capture files were only guessed and are not there: a process
        started by plain guest-exec, whose output (if any) the agent captured."""
        if handle.argv or not handle.files:
            return False
        try:
            self.file_close(self.file_open(handle.files[0], "rb"))
        except AgentCommandError:
            return True
        return False

    # --- waiting ----------------------------------------------------------------------

    def _finish(
        self,
        handle: RunHandle,
        deadline: float | None,
        timeout: float | None,
        check: bool,
        output: OutputCallback | None,
    ) -> RunResult:
        follower = _Follower(self, handle.files, output) if output is not None else None
        try:
            status = self._wait(handle, deadline, timeout, follower)
            ended = time.time()
            if follower is not None:
                follower.pump()
                out, out_cut, err, err_cut = follower.result()
                follower.close()
                self._remove(handle.files)
            elif handle.files and not self._started_elsewhere(handle):
                out, out_cut, err, err_cut = self._read_files(handle)
            else:
                out, err = status.out_data or b"", status.err_data or b""
                out_cut, err_cut = bool(status.out_truncated), bool(status.err_truncated)
        finally:
            if follower is not None:
                follower.close()
        state = self._run_state()
        with state.lock:
            state.pending.pop(handle.pid, None)
        result = RunResult(
            argv=handle.argv,
            pid=handle.pid,
            exitcode=status.exitcode,
            signal=status.signal,
            stdout=out,
            stderr=err,
            stdout_truncated=out_cut,
            stderr_truncated=err_cut,
            duration=max(0.0, ended - handle.started),
        )
        return self._checked(result, check)

    def _checked(self, result: RunResult, check: bool) -> RunResult:
        if check and not result.ok:
            raise CommandFailedError(
                f"{_show(result.argv, result.pid)} failed in {self.target}: "
                f"{result.describe()}" + _stderr_tail(result),
                result=result,
                target=self.target,
                command=Commands.exec.wire,
            )
        return result

    def _wait(
        self,
        handle: RunHandle,
        deadline: float | None,
        timeout: float | None,
        follower: _Follower | None,
    ) -> ExecStatus:
        """The exited status."""
        delay = FIRST_POLL
        while True:
            pause = delay if deadline is None else min(delay, deadline - time.monotonic())
            if pause > 0:
                time.sleep(pause)
            status = self._status(handle, deadline, timeout)
            if status.exited:
                return status
            if follower is not None:
                follower.pump()
            if deadline is not None and time.monotonic() >= deadline:
                raise self._still_running(handle, timeout, answered=True)
            delay = min(delay * 2, POLL_CEILING if follower is None else STREAM_POLL)

    def _still_running(
        self, handle: RunHandle, timeout: float | None, *, answered: bool
    ) -> CommandTimeoutError:
        how = (
            "is still running"
            if answered
            else "did not report its status in time (the agent did not answer; it may have ended)"
        )
        kept = (
            "its output stays in the guest files named by the handle"
            if handle.files
            else ("the agent keeps its output until it is collected")
        )
        return CommandTimeoutError(
            f"{_show(handle.argv, handle.pid)} {how} in {self.target} after {timeout:g} s ({kept})",
            hint=Hint(
                Remedy.COLLECT,
                "collect(error.handle) waits for it again and returns its output; "
                "cancel(error.handle) kills it and removes its files",
                {"pid": handle.pid},
            ),
            pid=handle.pid,
            argv=handle.argv,
            timeout=timeout or 0.0,
            handle=handle,
            target=self.target,
            command=Commands.exec_status.wire,
        )

    def _status(
        self, handle: RunHandle, deadline: float | None, timeout: float | None
    ) -> ExecStatus:
        """One guest-exec-status; a lost reply is asked again or reported, never ignored.

        Each call waits for its reply until the deadline, at most :data:`STATUS_TIMEOUT`
        and at least :data:`MIN_STATUS_WAIT`. An agent that went away (restarting)
        is waited for until the deadline, or :data:`AGENT_RESTART_WAIT`.
        """
        pid = handle.pid

        def poller() -> RunOps:
            if deadline is None:
                return self.with_timeout(STATUS_TIMEOUT)
            left = deadline - time.monotonic()
            return self.with_timeout(max(MIN_STATUS_WAIT, min(left, STATUS_TIMEOUT)))

        try:
            return poller().exec_status(pid)
        except ReplyTooLargeError as exc:
            raise self._lost(handle, exc, certain=True, too_large=True) from exc
        except AgentCommandError as exc:
            with self._run_state().lock:
                ours = pid in self._run_state().pending
            if not ours or not _unknown_pid(exc):
                raise  # a pid we never started, or collected already: the agent says so
            raise self._lost(handle, exc, certain=True, forgotten=True) from exc
        except (AgentTimeoutError, ConnectionLostError, AgentUnreachableError) as exc:
            first: GuestAgentError = exc
        if deadline is not None and time.monotonic() >= deadline:
            raise self._still_running(handle, timeout, answered=False) from first
        # The agent may have gone away (restarting: an upgrade run by the command itself):
        # wait for it to answer again before asking once more.
        wait = AGENT_RESTART_WAIT if deadline is None else deadline - time.monotonic()
        try:
            self.wait_for_agent(max(wait, MIN_STATUS_WAIT))
        except GuestAgentError as exc:
            raise self._lost(handle, first, certain=False) from exc
        try:
            return poller().exec_status(pid)
        except AgentCommandError as exc:
            if not _unknown_pid(exc):
                raise
            # The agent forgot the pid: the reply we lost said it had exited, or the
            # agent restarted (and forgot every process).
            raise self._lost(handle, first, certain=True, forgotten=True) from first
        except GuestAgentError as exc:
            raise self._lost(handle, first, certain=False) from exc

    def _lost(
        self,
        handle: RunHandle,
        cause: GuestAgentError,
        *,
        certain: bool,
        too_large: bool = False,
        forgotten: bool = False,
    ) -> OutputLostError:
        pid = handle.pid
        with self._run_state().lock:
            self._run_state().pending.pop(pid, None)
        kept = handle.files[:2]
        what = "output" if handle.capture and not kept else "exit status"
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
        elif forgotten:
            why = (
                "the agent no longer knows the process: it restarted, or the status "
                "reply that carried it was lost in transport"
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
                "remove them, or cancel() the handle)",
                {"files": kept},
            )
        return OutputLostError(
            f"the {what} of {_show(handle.argv, pid)} in {self.target} is "
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
        if capture_via not in ("auto", "agent", "files"):
            raise ValueError(f"capture_via must be 'auto', 'agent' or 'files', not {capture_via!r}")
        limited = self.transport.max_reply_bytes is not None
        if capture_via == "agent" and limited and self._posix_guest():
            raise ValueError(
                f"capture_via='agent' through {self.target}: its status reply can be larger "
                "than the backend carries, which breaks the agent channel until the domain "
                "restarts; use 'auto' or 'files' (guest files), or the socket backend"
            )
        if capture_via == "auto":
            return limited and self._posix_guest()
        return capture_via == "files"

    def _posix_guest(self) -> bool:
        state = self._run_state()
        if state.posix is None:
            try:
                state.posix = self.get_osinfo().id != "mswindows"
            except CommandNotFoundError:  # agents before 2.10: Windows ones say so
                state.posix = True
        return state.posix

    def _capture_dir(self) -> str:
        return f"{self.run_temp_dir.rstrip('/')}/{CAPTURE_DIR}"

    def _start_in_files(
        self,
        args: tuple[str, ...],
        input: bytes | None,
        env: Mapping[str, str] | None,
        started: float,
    ) -> RunHandle:
        directory = self._capture_dir()
        inline, input_file = input, ""
        limit = self.transport.max_request_bytes
        if input is not None and limit is not None and len(input) * 4 // 3 > limit // 2:
            # Too large for one request: uploaded in chunks into the private directory.
            input_file = f"{directory}/{secrets.token_hex(8)}.in"
            self._exec_and_wait([SHELL, "-c", _MKDIR, "qga-mkdir", directory])
            inline = None
            try:
                self.write_file(input_file, input, atomic=False)  # a private directory
            except BaseException:
                self._remove([input_file])
                raise
        entries = [f"{key}={value}" for key, value in env.items()] if env is not None else []
        count = str(len(entries)) if env is not None else "-1"
        try:
            pid = self.exec(
                SHELL,
                ["-c", _WRAPPER_SCRIPT, "qga-run", directory, input_file, count, *entries, *args],
                input=inline,
            )
        except BaseException:
            if input_file:
                self._remove([input_file])
            raise
        base = f"{directory}/{pid}"
        return RunHandle(pid=pid, argv=args, files=(f"{base}.out", f"{base}.err"), started=started)

    def _read_files(self, handle: RunHandle) -> tuple[bytes, bool, bytes, bool]:
        try:
            out, out_cut = self._read_capped(handle.files[0])
            err, err_cut = self._read_capped(handle.files[1])
        except GuestAgentError as exc:
            raise OutputLostError(
                f"the output of {_show(handle.argv, handle.pid)} could not be read back from "
                f"{self.target} [{exc}]",
                hint=Hint(
                    Remedy.READ_GUEST_FILES,
                    f"it is kept in {handle.files[0]} and {handle.files[1]} in the guest "
                    "(read_file them, then remove them)",
                    {"files": handle.files[:2]},
                ),
                pid=handle.pid,
                guest_files=handle.files[:2],
                cause=exc,
                target=self.target,
                command=exc.command,
            ) from exc
        self._remove(handle.files)
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
        if paths:
            with contextlib.suppress(GuestAgentError):
                self._exec_and_wait([SHELL, "-c", _REMOVE, "qga-rm", *paths])

    def _exec_and_wait(self, argv: Sequence[str]) -> int | None:
        """Run a helper of ours to its end (bounded by :data:`_REAP_WAIT`); its exit code
        (None: killed, or still running at the bound)."""
        pid = self.exec(argv[0], argv[1:])
        deadline = time.monotonic() + _REAP_WAIT
        delay = FIRST_POLL
        while True:
            status = self.exec_status(pid)
            if status.exited:
                return status.exitcode
            if time.monotonic() >= deadline:
                return None
            time.sleep(delay)
            delay = min(delay * 2, POLL_CEILING)

    def _run_state(self) -> _State:
        with _STATES_LOCK:
            state = _STATES.get(self.transport)
            if state is None:
                state = _STATES[self.transport] = _State()
            return state


class _Follower:
    """Reads capture files as they grow, hands the new bytes to a callback, keeps them."""

    def __init__(self, agent: RunOps, files: Sequence[str], output: OutputCallback) -> None:
        self._agent = agent
        self._streams = [("stdout", files[0]), ("stderr", files[1])]
        self._output = output
        self._handles: dict[str, int] = {}
        self._data: dict[str, bytearray] = {"stdout": bytearray(), "stderr": bytearray()}
        self._cut: dict[str, bool] = {"stdout": False, "stderr": False}

    def pump(self) -> None:
        agent = self._agent
        for name, path in self._streams:
            handle = self._handles.get(name)
            if handle is None:
                try:
                    handle = self._handles[name] = agent.file_open(path, "rb")
                except AgentCommandError:
                    continue  # not created yet: the wrapper is still starting
            kept = self._data[name]
            # A seek clears the end-of-file flag the last read left (stdio's is sticky).
            agent.file_seek(handle, 0, SeekWhence.CUR)
            while True:
                read = agent.file_read(handle, _STREAM_CHUNK)
                if read.count:
                    room = OUTPUT_LIMIT - len(kept)
                    kept += read.data[: max(room, 0)]
                    self._cut[name] |= read.count > room
                    self._output(name, read.data)
                if read.eof or read.count < _STREAM_CHUNK:
                    break

    def result(self) -> tuple[bytes, bool, bytes, bool]:
        data, cut = self._data, self._cut
        return bytes(data["stdout"]), cut["stdout"], bytes(data["stderr"]), cut["stderr"]

    def close(self) -> None:
        for handle in self._handles.values():
            with contextlib.suppress(GuestAgentError):
                self._agent.file_close(handle)
        self._handles.clear()


def _unknown_pid(exc: AgentCommandError) -> bool:
    return "pid" in exc.desc


_CANNOT_START: Final = re.compile(r"Failed to execute child process .*\((.*)\)")


def _cannot_start(program: str, desc: str) -> tuple[int, str] | None:
    """(exit code, words) of a program the agent could not start, as a shell says it."""
    found = _CANNOT_START.search(desc)
    if found is None:
        return None
    if "No such file" in found[1]:
        return 127, NOT_FOUND
    return 126, NO_PERMISSION


def _show(argv: Sequence[str], pid: int) -> str:
    return f"{shlex.join(argv)!r} (pid {pid})" if argv else f"guest process {pid}"


def _stderr_tail(result: RunResult) -> str:
    text = result.stderr_text().strip()
    if not text:
        return ""
    if len(text) > _STDERR_IN_MESSAGE:
        text = "..." + text[-_STDERR_IN_MESSAGE:]
    return f"; stderr: {text}"
