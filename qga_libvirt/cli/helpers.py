"""The helpers: short names for what people do most, with output made for people.

The views (``info``, ``osinfo``, ``ifaddr``, ``fsinfo``, ``users``) run one declared
command each: their ``--json`` is that command's, only the text differs. A helper whose
name is a declared command's subcommand name (``info``, ``exec``) takes its place.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import contextlib
import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Final

from ..commands import Command, Commands
from ..errors import AgentCommandError, CommandTimeoutError, GuestAgentError
from ..operations.freeze import FREEZE_TIMEOUT
from ..operations.run import OUTPUT_LIMIT, SHELL
from ..transports.base import features_of
from . import exits
from .core import Context, Outcome, Runner, Subcommand
from .inputs import UsageError, read_bytes, read_lines, read_secret, stdin_is_piped
from .output import ProgressBar, human_size, one_line, table
from .summaries import SUMMARIES, fsinfo_text, ifaddr_text, users_text

if TYPE_CHECKING:
    from ..client import GuestAgent
    from ..models import AgentInfo, RunHandle, RunResult

__all__ = ["HELPERS", "GuestPath", "parse_copy", "parse_guest_spec"]


# --- views ----------------------------------------------------------------------------


def _view(
    name: str,
    summary: str,
    command: Command[Any, Any],
    text: Callable[[Any], Sequence[str]] | None = None,
) -> Subcommand:
    """A helper that runs ``command`` and shows its reply with ``text(value)``."""

    def prepare(ctx: Context, namespace: argparse.Namespace) -> Runner:
        def run(agent: GuestAgent) -> Outcome:
            value = command.__get__(agent, type(agent))()
            return Outcome(value, text=None if text is None else text(value))

        return run

    return Subcommand(name, summary, prepare, runs=(command,))


def _info_text(info: AgentInfo) -> list[str]:
    rows = [
        [c.name, "yes" if c.enabled else "no", "yes" if c.success_response else "no"]
        for c in info.supported_commands
    ]
    return [f"version: {info.version}", *table(["Command", "Enabled", "Replies"], rows)]


# --- exec and shell -------------------------------------------------------------------


def _run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-e",
        "--env",
        metavar="KEY=VALUE",
        action="append",
        default=[],
        help="environment of the process (replaces the agent's whole environment)",
    )
    parser.add_argument(
        "-n",
        "--no-stdin",
        action="store_true",
        help="do not pass qga's stdin to the process (it is passed when piped)",
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        help="on Ctrl-C or --timeout leave the process running (and print how to collect "
        "it) instead of killing it",
    )
    stream = parser.add_mutually_exclusive_group()
    stream.add_argument(
        "--stream",
        action="store_true",
        default=None,
        help="print the output while the process runs (default on a terminal, POSIX guests)",
    )
    stream.add_argument(
        "--no-stream", dest="stream", action="store_false", help="print it when it ends"
    )


def _environment(items: Sequence[str]) -> dict[str, str] | None:
    env = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--env {item} is not KEY=VALUE")
        env[key] = value
    return env or None


def _stdin_data(ctx: Context, namespace: argparse.Namespace) -> bytes | None:
    if namespace.no_stdin or ctx.in_fleet or not stdin_is_piped():
        return None
    return read_bytes("-") or None


def _run_outcome(result: RunResult) -> Outcome:
    """The outcome of a finished guest process: its output as it is, its status as ours."""
    code = exits.exit_code_of_process(result.exitcode, result.signal)
    messages = tuple(
        f"warning: the process's {stream} was cut at {human_size(OUTPUT_LIMIT)}"
        for stream, cut in (
            ("stdout", result.stdout_truncated),
            ("stderr", result.stderr_truncated),
        )
        if cut
    )
    return Outcome(
        result,
        text=(),
        stdout=result.stdout,
        stderr=result.stderr,
        summary=one_line(result.stdout_text()),
        messages=messages,
        exit_code=code,
    )


def _exec_arguments(parser: argparse.ArgumentParser) -> None:
    _run_arguments(parser)
    parser.add_argument(
        "--no-wait",
        action="store_true",
        help="start the process and print its pid (see exec-status) instead of waiting",
    )
    parser.add_argument(
        "--collect",
        type=int,
        metavar="PID",
        help="wait for a process an earlier exec left running (--keep) and print its output",
    )
    parser.add_argument("argv", nargs=argparse.REMAINDER, metavar="-- PROGRAM [ARG...]")


def _prepare_exec(ctx: Context, namespace: argparse.Namespace) -> Runner:
    argv = list(namespace.argv)
    if argv[:1] == ["--"]:
        argv = argv[1:]
    if namespace.collect is not None:
        if argv:
            raise UsageError("exec --collect PID waits for a running process: give no program")
        pid = namespace.collect

        def collect(agent: GuestAgent) -> Outcome:
            try:
                result = agent.collect(pid, timeout=ctx.timeout)
            except CommandTimeoutError as exc:
                raise _still_running(ctx, agent, exc, keep=True) from exc
            return _run_outcome(result)

        return collect
    if not argv:
        raise UsageError("exec needs the program to run: qga DOMAIN exec -- PROGRAM [ARG...]")
    env = _environment(namespace.env)
    data = _stdin_data(ctx, namespace)
    if namespace.no_wait:

        def start(agent: GuestAgent) -> Outcome:
            pid = agent.exec(argv[0], argv[1:], env=env, input=data, capture_output=True)
            return Outcome(pid)

        return start

    def run(agent: GuestAgent) -> Outcome:
        return _run_waiting(ctx, agent, argv, data, env, namespace)

    return run


def _run_waiting(
    ctx: Context,
    agent: GuestAgent,
    argv: Sequence[str],
    data: bytes | None,
    env: dict[str, str] | None,
    namespace: argparse.Namespace,
) -> Outcome:
    """exec and shell: wait for the process; Ctrl-C and --timeout kill it unless --keep."""
    stream = namespace.stream
    if stream is None:
        stream = not ctx.out.json_mode and not ctx.in_fleet and ctx.out.stdout.isatty()
    output = _streamer(ctx) if stream else None
    keep = namespace.keep
    started: list[RunHandle] = []
    try:
        result = agent.run(
            argv,
            input=data,
            env=env,
            timeout=ctx.timeout,
            output=output,
            keep=keep,
            on_start=started.append,
        )
    except CommandTimeoutError as exc:
        raise _still_running(ctx, agent, exc, keep=keep) from exc
    except KeyboardInterrupt:
        if keep and started:  # without --keep, run() killed it
            pid = started[0].pid
            ctx.out.error(
                f"the process goes on as pid {pid}: `{_collect(ctx, agent, pid)}` collects it"
            )
        raise
    outcome = _run_outcome(result)
    if output is not None:  # already shown
        return dataclasses.replace(outcome, stdout=b"", stderr=b"")
    return outcome


def _collect(ctx: Context, agent: GuestAgent, pid: int) -> str:
    """The command line that collects process ``pid`` later: in a fleet, for the target
    that ran it (its socket, or its URI and UUID), not the command line's."""
    identity = features_of(agent.transport).identity if ctx.in_fleet else None
    if identity is not None and identity.socket is not None:
        where = f"qga --socket {identity.socket}"
    elif identity is not None and identity.uri and identity.domain_uuid:
        where = f"qga -c {identity.uri} {identity.domain_uuid}"
    elif ctx.options.domain:
        where = f"qga {ctx.options.domain}"
    else:
        where = f"qga --socket {ctx.options.socket}"
    return f"{where} exec --collect {pid}"


def _streamer(ctx: Context) -> Callable[[str, bytes], None]:
    def show(stream: str, data: bytes) -> None:
        ctx.out.raw(data, error=stream == "stderr")
        ctx.out.flush()

    return show


def _still_running(
    ctx: Context, agent: GuestAgent, exc: CommandTimeoutError, *, keep: bool
) -> CommandTimeoutError:
    """The error for --timeout: the process was killed, or (--keep) how to collect it."""
    if keep:
        what = (
            f"it goes on as pid {exc.pid}: `{_collect(ctx, agent, exc.pid)}` waits for it and "
            "prints its output"
        )
    else:
        with contextlib.suppress(GuestAgentError):
            agent.cancel(exc.handle if exc.handle is not None else exc.pid)
        what = "it was killed (--keep leaves it running, to collect later)"
    return CommandTimeoutError(
        f"the process was still running in {agent.target} after {exc.timeout:g} s: {what}",
        pid=exc.pid,
        argv=exc.argv,
        timeout=exc.timeout,
        handle=exc.handle,
        target=exc.target,
        command=exc.command,
    )


def _shell_arguments(parser: argparse.ArgumentParser) -> None:
    _run_arguments(parser)
    parser.add_argument("script", metavar="CMD", help="a shell command line, run by /bin/sh -c")


def _prepare_shell(ctx: Context, namespace: argparse.Namespace) -> Runner:
    env = _environment(namespace.env)
    data = _stdin_data(ctx, namespace)

    def run(agent: GuestAgent) -> Outcome:
        return _run_waiting(ctx, agent, [SHELL, "-c", namespace.script], data, env, namespace)

    return run


# --- cp -------------------------------------------------------------------------------

_REMOTE = re.compile(r"^([^/:]*):(.*)$")


class GuestPath(tuple[str, str]):
    """``DOMAIN:/path`` split: the domain ('' for ``:/path``) and the path."""

    @property
    def domain(self) -> str:
        return self[0]

    @property
    def path(self) -> str:
        return self[1]


def parse_guest_spec(spec: str) -> GuestPath | None:
    """``web1:/etc/hosts`` -> ('web1', '/etc/hosts'); a local path -> None.

    A colon before any slash marks the guest side (as scp): write ``./a:b`` for a
    local file whose name has a colon.
    """
    found = _REMOTE.match(spec)
    if found is None or not found.group(2):
        return None
    return GuestPath((found.group(1), found.group(2)))


def parse_copy(source: str, destination: str) -> tuple[GuestPath, str, bool]:
    """(guest side, local side, whether the copy is a download).

    Raises:
        UsageError: both sides or neither are in the guest.
    """
    src, dst = parse_guest_spec(source), parse_guest_spec(destination)
    if src is not None and dst is not None:
        raise UsageError("cp copies between the host and one guest: one side must be local")
    if src is not None:
        return src, destination, True
    if dst is not None:
        return dst, source, False
    raise UsageError("cp needs a guest side, DOMAIN:/path (or :/path after the domain)")


def _cp_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "source", metavar="SRC", help="DOMAIN:/path, :/path, a local path, or - for stdin"
    )
    parser.add_argument("destination", metavar="DST", help="as SRC (- for stdout); one side local")
    parser.add_argument(
        "--mode",
        type=lambda text: int(text, 8),
        metavar="OCTAL",
        help="permissions of the guest file, set before any data lands (default: those of "
        "the file replaced, else 644)",
    )
    parser.add_argument(
        "--in-place",
        action="store_true",
        help="write the guest file in place (truncated first, partial if interrupted) "
        "instead of into a temporary file renamed when complete; for guests without a "
        "POSIX shell, or where the agent refuses to run programs",
    )


def _prepare_cp(ctx: Context, namespace: argparse.Namespace) -> Runner:
    remote, local, download = parse_copy(namespace.source, namespace.destination)
    domain = ctx.options.domain
    if remote.domain and remote.domain != domain:
        where = f"domain '{domain}'" if domain else "a socket"
        raise UsageError(
            f"cp on {where} was given a path on '{remote.domain}': write :{remote.path} "
            "(or qga cp DOMAIN:/path ...)"
        )
    source, destination = (remote.path, local) if download else (local, remote.path)

    def run(agent: GuestAgent) -> Outcome:
        target = destination
        if download and target == "-":
            data = agent.read_file(source)
            ctx.out.raw(data)
            return Outcome({"source": source, "destination": "-", "bytes": len(data)}, text=())
        if not download and source == "-":
            if target.endswith("/"):
                raise UsageError("cp from stdin (-) needs a guest file name, not a directory")
            count = agent.upload(
                "-",
                target,
                source=sys.stdin.buffer,
                mode=namespace.mode,
                atomic=not namespace.in_place,
            )
            return Outcome({"source": "-", "destination": target, "bytes": count}, text=())
        if download and os.path.isdir(target):
            target = os.path.join(target, os.path.basename(source.rstrip("/\\")))
        elif not download and target.endswith(("/", "\\")):
            target += os.path.basename(source)
        progress = ProgressBar(ctx.out, os.path.basename(source)) if ctx.progress_allowed else None
        try:
            if download:
                count = agent.download(source, target, progress=progress)
            else:
                count = agent.upload(
                    source,
                    target,
                    progress=progress,
                    mode=namespace.mode,
                    atomic=not namespace.in_place,
                )
        finally:
            if progress is not None:
                progress.finish()
        return Outcome(
            {"source": source, "destination": target, "bytes": count, "download": download},
            text=(),
        )

    return run


# --- freeze ---------------------------------------------------------------------------


def _freeze_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-m",
        "--mountpoint",
        dest="mountpoints",
        action="append",
        metavar="PATH",
        help="freeze only this mount point (repeat for more; default: all)",
    )
    parser.add_argument(
        "--thaw-after",
        type=float,
        metavar="SECONDS",
        default=FREEZE_TIMEOUT,
        help=f"thaw after this long even if the host command still runs "
        f"(default {FREEZE_TIMEOUT:g}; the command's result then counts as failed)",
    )
    parser.add_argument("host_command", nargs=argparse.REMAINDER, metavar="-- HOST_COMMAND")


_HOST_GRACE: Final = 2.0  # seconds an interrupted host command has to end on SIGINT


def _run_host(argv: Sequence[str]) -> tuple[int, tuple[str, ...]]:
    """Run a command on the host; (exit status as a shell gives it, error lines).

    It runs in a process group of its own, handed the terminal when qga has it, so that
    Ctrl-C reaches it as it would from a shell. When qga is interrupted while it runs
    (SIGINT from outside the terminal, an error), the whole group gets SIGINT, then
    SIGKILL after :data:`_HOST_GRACE` s: nothing it started outlives qga (a grandchild
    that missed or ignored the SIGINT would hold qga's stdout and stderr open for good).
    """
    deferred = _DeferredInterrupt()
    with deferred:
        try:
            process = subprocess.Popen(argv, process_group=0)
        except FileNotFoundError:
            return exits.NOT_FOUND, (f"error: {argv[0]}: command not found on the host",)
        except PermissionError:
            return exits.CANNOT_RUN, (f"error: {argv[0]}: permission denied",)
        except OSError as exc:
            return exits.CANNOT_RUN, (f"error: {argv[0]}: {exc.strerror or exc}",)
        terminal = None
        try:
            deferred.release()  # a Ctrl-C while it started is raised here, where it is ended
            terminal = _foreground_terminal()
            if terminal is not None:
                _hand_terminal(terminal, process.pid)
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGCONT)  # stopped reading it before: go on
            status = process.wait()
        except BaseException:
            _end_group(process)
            raise
        finally:
            if terminal is not None:
                _hand_terminal(terminal, os.getpgrp())
    if status < 0:
        return exits.SIGNAL_BASE - status, ()
    return status, ()


class _DeferredInterrupt:
    """Holds SIGINT back from ``with`` until :meth:`release` (which raises the
    KeyboardInterrupt of one that came meanwhile): one raised inside Popen, between the
    fork and its return, would lose the child, left running in a group of its own.
    Outside the main thread (where no KeyboardInterrupt is raised) it does nothing."""

    def __init__(self) -> None:
        self.caught = False
        self._previous: Any = None
        self._holding = False

    def __enter__(self) -> _DeferredInterrupt:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._catch) or signal.SIG_DFL
            self._holding = True
        return self

    def _catch(self, signum: int, frame: object) -> None:
        self.caught = True

    def release(self) -> None:
        if self._holding:
            self._holding = False
            signal.signal(signal.SIGINT, self._previous)
        if self.caught:
            self.caught = False
            raise KeyboardInterrupt

    def __exit__(self, kind: object, *exc: object) -> None:
        if self._holding:
            self._holding = False
            signal.signal(signal.SIGINT, self._previous)
        if self.caught and kind is None:
            raise KeyboardInterrupt


def _foreground_terminal() -> int | None:
    """The fd of the terminal whose foreground process group is ours, if any."""
    for fd in (0, 1, 2):
        with contextlib.suppress(OSError):
            if os.isatty(fd) and os.tcgetpgrp(fd) == os.getpgrp():
                return fd
    return None


def _hand_terminal(fd: int, group: int) -> None:
    """Make ``group`` the terminal's foreground group (best effort: a terminal that went
    away, or a call from another thread than the main one, leaves it as it is)."""
    with contextlib.suppress(OSError, ValueError):
        # A background group that sets the foreground gets SIGTTOU unless it ignores it.
        previous = signal.signal(signal.SIGTTOU, signal.SIG_IGN)
        try:
            os.tcsetpgrp(fd, group)
        finally:
            signal.signal(signal.SIGTTOU, previous)


def _end_group(process: subprocess.Popen[bytes]) -> None:
    """SIGINT to the host command's whole group, then SIGKILL after a grace; reaped."""
    for sig, wait in ((signal.SIGINT, _HOST_GRACE), (signal.SIGKILL, None)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            process.wait(wait)
        except subprocess.TimeoutExpired:
            continue
        if wait is not None:  # the leader ended: its group may still hold others
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
        return


def _prepare_freeze(ctx: Context, namespace: argparse.Namespace) -> Runner:
    argv = list(namespace.host_command)
    if argv[:1] == ["--"]:
        argv = argv[1:]
    if not argv:
        raise UsageError(
            "freeze needs the host command to run while frozen: qga DOMAIN freeze -- CMD"
        )
    mountpoints = namespace.mountpoints

    def run(agent: GuestAgent) -> Outcome:
        with agent.frozen(mountpoints, timeout=namespace.thaw_after) as count:
            status, messages = _run_host(argv)
        return Outcome(
            {"frozen": count, "exit_code": status},
            text=(),
            messages=messages,
            exit_code=status,
        )

    return run


# --- power ----------------------------------------------------------------------------


PowerAction = Callable[["GuestAgent", "float | None"], None]
"""One of the agent's shutdowns, given how long to wait for it (None: not at all)."""


def _power(name: str, summary: str, act: PowerAction) -> Subcommand:
    """reboot, poweroff, halt: the agent's shutdown, optionally waited for."""

    def arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--wait",
            type=float,
            metavar="SECONDS",
            help="then wait up to this long for the guest to go down"
            + (" and its agent to answer again" if name == "reboot" else ""),
        )

    def prepare(ctx: Context, namespace: argparse.Namespace) -> Runner:
        def run(agent: GuestAgent) -> Outcome:
            act(agent, namespace.wait)
            return Outcome()

        return run

    return Subcommand(name, summary, prepare, arguments, runs=(Commands.shutdown,))


# --- the rest -------------------------------------------------------------------------


def _prepare_wait(ctx: Context, namespace: argparse.Namespace) -> Runner:
    if ctx.options.socket is None and not ctx.in_fleet:
        from ..discovery import start_event_loop

        start_event_loop()  # wakes on libvirt's agent-connected event: before connecting
    seconds = ctx.timeout or 60.0

    def run(agent: GuestAgent) -> Outcome:
        agent.wait_for_agent(seconds)
        return Outcome()

    return run


def _passwd_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("user", metavar="USER")
    parser.add_argument(
        "--crypted", action="store_true", help="the input is already a crypt(3) hash"
    )


def _prepare_passwd(ctx: Context, namespace: argparse.Namespace) -> Runner:
    user = namespace.user
    password = read_secret(f"New password for {user}: ")

    def run(agent: GuestAgent) -> Outcome:
        try:
            agent.set_user_password(user, password, namespace.crypted)
        except AgentCommandError as exc:
            if _no_such_user(agent, user):
                raise UsageError(
                    f"user {user} does not exist in the guest: nothing was changed"
                ) from exc
            raise
        return Outcome(done=f"password of {user} changed")

    return run


def _user_lookup_failed(error: AgentCommandError) -> bool:
    """Whether the agent's error says the user does not exist.

    qemu-ga words it "failed to lookup user 'NAME'" (its ssh commands, getpwnam).
    """
    return "failed to lookup user" in error.desc


def _no_such_user(agent: GuestAgent, user: str) -> bool:
    """After a failed change: whether the user is unknown to the guest.

    The agent's password error does not say why (chpasswd failed); its ssh commands
    look the user up, so ask one of them, when the agent has it.
    """
    if not agent.supports(Commands.ssh_get_authorized_keys):
        return False
    try:
        agent.ssh_get_authorized_keys(user)
    except AgentCommandError as exc:
        return _user_lookup_failed(exc)
    except GuestAgentError:
        return False
    return False


def _ssh_keys_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=("list", "add", "remove"))
    parser.add_argument("user", metavar="USER")
    parser.add_argument(
        "keys", nargs="*", metavar="KEY", help="public keys (default: read from stdin, one a line)"
    )
    parser.add_argument("--reset", action="store_true", help="add: replace all existing keys")


def _prepare_ssh_keys(ctx: Context, namespace: argparse.Namespace) -> Runner:
    action, user = namespace.action, namespace.user
    keys = list(namespace.keys)
    if action == "list":
        if keys or namespace.reset:
            raise UsageError("ssh-keys list takes only USER")

        def list_keys(agent: GuestAgent) -> Outcome:
            try:
                found = agent.ssh_get_authorized_keys(user)
            except AgentCommandError as exc:
                if _user_lookup_failed(exc):
                    raise UsageError(f"user {user} does not exist in the guest") from exc
                if not _no_keys_file(exc):
                    raise
                found = []  # no authorized_keys file: no keys, as ssh sees it
            return Outcome(found, text=found, summary=f"{len(found)} keys")

        return list_keys
    keys = keys or read_lines()
    if not keys:
        raise UsageError(f"ssh-keys {action} needs keys: as arguments, or one a line on stdin")
    if namespace.reset and action != "add":
        raise UsageError("--reset goes with ssh-keys add")
    if action == "add":
        for number, key in enumerate(keys, 1):
            check_public_key(key, number)

    def change(agent: GuestAgent) -> Outcome:
        try:
            if action == "add":
                agent.ssh_add_authorized_keys(user, keys, namespace.reset)
            else:
                agent.ssh_remove_authorized_keys(user, keys)
        except AgentCommandError as exc:
            if _user_lookup_failed(exc):
                raise UsageError(f"user {user} does not exist in the guest") from exc
            raise
        verb = "added to" if action == "add" else "removed from"
        return Outcome(done=f"{len(keys)} key(s) {verb} the authorized keys of {user}")

    return change


def _no_keys_file(error: AgentCommandError) -> bool:
    """Whether the agent's error says the user has no authorized_keys file.

    qemu-ga: "failed to read '/home/u/.ssh/authorized_keys': ... No such file or directory".
    """
    return "authorized_keys" in error.desc and "No such file or directory" in error.desc


_KEY_TYPES: Final = frozenset(
    {
        "ssh-rsa",
        "ssh-dss",
        "ssh-ed25519",
        "ecdsa-sha2-nistp256",
        "ecdsa-sha2-nistp384",
        "ecdsa-sha2-nistp521",
        "sk-ssh-ed25519@openssh.com",
        "sk-ecdsa-sha2-nistp256@openssh.com",
    }
)
"""The key types OpenSSH accepts in authorized_keys (certificates are their -cert-v01)."""


def check_public_key(line: str, number: int = 1) -> None:
    """Check that ``line`` is an authorized_keys line: [options] TYPE BASE64 [comment].

    The base64 body must decode and start with the same type, as OpenSSH's keys do.

    Raises:
        UsageError: it is not; the message says what is wrong.
    """
    words = line.split()
    if words and _key_type(words[0]) is None and len(words) > 1:
        words = words[1:]  # leading options, e.g. no-pty,from="10.0.0.1"
    where = f"key {number}" if number else "the key"
    if len(words) < 2 or _key_type(words[0]) is None:
        raise UsageError(
            f"{where} is not an SSH public key: it must start with its type (ssh-ed25519, "
            "ssh-rsa, ecdsa-sha2-nistp256, ...) followed by its base64 body, as in a .pub file"
        )
    kind, body = words[0], words[1]
    try:
        blob = base64.b64decode(body, validate=True)
    except binascii.Error:
        raise UsageError(f"{where} ({kind}): its body is not base64") from None
    length = int.from_bytes(blob[:4], "big") if len(blob) >= 4 else -1
    if blob[4 : 4 + length].decode("ascii", "replace") != kind:
        raise UsageError(f"{where} ({kind}): its body is not a {kind} key")


def _key_type(word: str) -> str | None:
    base = word.removesuffix("-cert-v01@openssh.com")
    return word if base in _KEY_TYPES else None


def _call_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "wire", metavar="COMMAND", help=f"a wire name, e.g. {Commands.get_time.wire}"
    )
    parser.add_argument(
        "arguments",
        nargs="?",
        metavar="JSON",
        help="its arguments, e.g. '{\"id\": 1}'; - for stdin",
    )


def _prepare_call(ctx: Context, namespace: argparse.Namespace) -> Runner:
    arguments: dict[str, Any] | None = None
    if namespace.arguments is not None:
        text = read_bytes("-").decode() if namespace.arguments == "-" else namespace.arguments
        try:
            arguments = json.loads(text)
        except ValueError as exc:
            raise UsageError(f"the arguments are not JSON: {exc}") from None
        if not isinstance(arguments, dict):
            raise UsageError("the arguments must be a JSON object")

    def run(agent: GuestAgent) -> Outcome:
        value = agent.call(namespace.wire, arguments)
        return Outcome(value, text=json.dumps(value, indent=2, ensure_ascii=False).splitlines())

    return run


HELPERS: tuple[Subcommand, ...] = (
    _view(
        "info",
        "The agent's version and its commands (enabled, replying).",
        Commands.info,
        _info_text,
    ),
    _view("osinfo", "The guest's operating system and kernel.", Commands.get_osinfo),
    _view(
        "ifaddr",
        "The guest's interfaces and addresses, as a table.",
        Commands.network_get_interfaces,
        ifaddr_text,
    ),
    _view(
        "fsinfo",
        "The guest's filesystems with their sizes, as a table.",
        Commands.get_fsinfo,
        fsinfo_text,
    ),
    _view("users", "Who is logged in to the guest.", Commands.get_users, users_text),
    *SUMMARIES,
    Subcommand(
        "exec",
        "Run a program in the guest: its output as it is, its exit status as qga's.",
        _prepare_exec,
        _exec_arguments,
        runs=(Commands.exec, Commands.exec_status),
        description=(
            "Run PROGRAM with its arguments in the guest and wait for it (--timeout "
            "bounds the wait). Its stdout and stderr are written as they are, bytes; its "
            "exit status becomes qga's (128+N when a signal N killed it). qga's stdin is "
            "passed to it when piped. With --no-wait, prints the pid (then exec-status)."
        ),
    ),
    Subcommand(
        "shell",
        "Run a shell command line in the guest, as exec does.",
        _prepare_shell,
        _shell_arguments,
        runs=(Commands.exec, Commands.exec_status),
    ),
    Subcommand(
        "cp",
        "Copy a file between the host and the guest: cp DOMAIN:/path LOCAL or back.",
        _prepare_cp,
        _cp_arguments,
        runs=(Commands.file_open, Commands.file_read, Commands.file_write, Commands.file_close),
        description=(
            "Copy one file between the host and a guest, either way, streamed in chunks "
            "sized for the backend. The guest side is DOMAIN:/path (`qga cp`) or :/path "
            "(`qga DOMAIN cp`). A local directory as destination keeps the file's name, so "
            "does a guest destination ending in /. A progress bar is drawn on a terminal. "
            "A failed download leaves no partial file."
        ),
        in_fleet=False,
    ),
    Subcommand(
        "freeze",
        "Freeze the guest's filesystems while a host command runs (e.g. a snapshot).",
        _prepare_freeze,
        _freeze_arguments,
        runs=(Commands.fsfreeze_freeze_list, Commands.fsfreeze_thaw),
        description=(
            "Freeze the guest's filesystems (or those at --mountpoint), run HOST_COMMAND "
            "on the host, and thaw them whatever happens (failure, Ctrl-C). The host "
            "command's exit status becomes qga's."
        ),
        in_fleet=False,
    ),
    _power(
        "reboot",
        "Reboot the guest (--wait: until its agent answers again).",
        lambda agent, wait: agent.reboot(wait=wait),
    ),
    _power(
        "poweroff",
        "Power the guest off (--wait: until it is off).",
        lambda agent, wait: agent.poweroff(wait=wait),
    ),
    _power(
        "halt",
        "Halt the guest's OS, the VM staying on (--wait: until it is down).",
        lambda agent, wait: agent.halt(wait=wait),
    ),
    Subcommand(
        "wait",
        "Wait until the agent answers (--timeout, default 60 s).",
        _prepare_wait,
        runs=(Commands.ping,),
    ),
    Subcommand(
        "passwd",
        "Set a guest user's password, read from the terminal or stdin (never argv).",
        _prepare_passwd,
        _passwd_arguments,
        runs=(Commands.set_user_password,),
    ),
    Subcommand(
        "ssh-keys",
        "List, add or remove a guest user's SSH authorized keys.",
        _prepare_ssh_keys,
        _ssh_keys_arguments,
        runs=(
            Commands.ssh_get_authorized_keys,
            Commands.ssh_add_authorized_keys,
            Commands.ssh_remove_authorized_keys,
        ),
    ),
    Subcommand(
        "call",
        "Run any command by wire name with JSON arguments; prints the raw reply.",
        _prepare_call,
        _call_arguments,
    ),
)
"""Every helper, in the order of ``qga --help``."""
