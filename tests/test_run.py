"""run(), run_shell() and collect(): a scripted guest for the faults, real agents for the rest.

The scripted guest (:class:`FakeGuest`, behind a FakeTransport) runs "processes" that
exit after a given number of status polls, keeps files, and loses replies on demand, on
a virtual clock: polling, timeouts and every way output could be lost are checked
without waiting. Then the same calls on the host's real qemu-ga (socket backend) and on
the tiny guest through libvirt (output in guest files) and through its raw socket.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from qga_libvirt import (
    AgentCommandError,
    AgentTimeoutError,
    CommandFailedError,
    CommandTimeoutError,
    ConnectionLostError,
    FakeTransport,
    GuestAgent,
    OutputLostError,
    RequestTooLargeError,
    RunHandle,
    RunResult,
)
from qga_libvirt.errors import ERR_TIMED_OUT, ReplyTooLargeError
from qga_libvirt.operations import run as run_module
from qga_libvirt.protocol import Reply
from qga_libvirt.transports.base import Request

from .lab import Lab

# --- a scripted guest -------------------------------------------------------------------


@dataclass
class Outcome:
    """How a scripted process ends."""

    exitcode: int | None = 0
    signal: int | None = None
    out: bytes = b""
    err: bytes = b""


Program = Callable[[list[str], bytes | None, dict[str, str]], Outcome]


def echo_program(argv: list[str], stdin: bytes | None, env: dict[str, str]) -> Outcome:
    """cat: stdin to stdout; echo: its arguments; fail: exit 3; kill: signal 9."""
    name = argv[0].rsplit("/", 1)[-1]
    if name == "cat":
        return Outcome(out=stdin or b"")
    if name == "echo":
        return Outcome(out=" ".join(argv[1:]).encode() + b"\n")
    if name == "env":
        return Outcome(out="".join(f"{k}={v}\n" for k, v in env.items()).encode())
    if name == "fail":
        return Outcome(exitcode=3, err=b"it went wrong\n")
    if name == "kill":
        return Outcome(exitcode=None, signal=9)
    return Outcome(exitcode=127, err=f"{name}: not found\n".encode())


@dataclass
class Process:
    outcome: Outcome
    polls_left: int
    capture: bool
    inline: int = 0  # the wrapper's bound on output written into its status reply
    files: tuple[str, ...] = ()


@dataclass
class FakeGuest:
    """An agent with processes and files, behind a FakeTransport's handler."""

    os_id: str = "debian"
    polls: int = 0  # status polls that still say "running"
    capture_limit: int = 1 << 30
    program: Program = echo_program
    files: dict[str, bytes] = field(default_factory=dict)
    processes: dict[int, Process] = field(default_factory=dict)
    status_faults: list[Callable[[int], Any]] = field(default_factory=list)
    read_fault: GuestAgentFault | None = None
    started: list[list[str]] = field(default_factory=list)
    helper: bool = True  # the wrapper's helper writes small output into the status reply
    _pid: int = 1000
    _handles: dict[int, list[Any]] = field(default_factory=dict)

    def __call__(self, request: Request) -> Any:
        args = dict(request.arguments or {})
        name = request.command.removeprefix("guest-").replace("-", "_")
        handler: Callable[[dict[str, Any]], Any] = getattr(self, f"do_{name}")
        return handler(args)

    def do_ping(self, args: dict[str, Any]) -> Any:
        return {}

    def do_get_osinfo(self, args: dict[str, Any]) -> Any:
        return {"id": self.os_id}

    def do_exec(self, args: dict[str, Any]) -> Any:
        argv = [args["path"], *args.get("arg", [])]
        stdin = base64.b64decode(args["input-data"]) if "input-data" in args else None
        env = dict(item.split("=", 1) for item in args.get("env", []))
        self.started.append(argv)
        capture = bool(args.get("capture-output"))
        role = argv[3] if argv[:2] == ["/bin/sh", "-c"] and len(argv) > 3 else None
        if role == "qga-rm":
            for path in argv[4:]:
                self.files.pop(path, None)
            outcome = Outcome()
        elif role == "qga-run":  # the wrapper: DIR INPUT N INLINE TIDY ENV... ARGV...
            directory, input_file, count, inline = argv[4], argv[5], int(argv[6]), int(argv[7])
            entries = argv[9 : 9 + max(count, 0)]
            command = argv[9 + max(count, 0) :]
            if count >= 0:
                env = dict(item.split("=", 1) for item in entries)
            if input_file:
                stdin = self.files.pop(input_file)
            outcome = self.program(command, stdin, env)
            self._pid += 1
            files = (f"{directory}/{self._pid}.out", f"{directory}/{self._pid}.err")
            self.files[files[0]], self.files[files[1]] = outcome.out, outcome.err
            inline = inline if self.helper else 0
            self.processes[self._pid] = Process(outcome, self.polls, capture, inline, files)
            return {"pid": self._pid}
        elif role == "qga-cancel":
            self.processes.pop(int(argv[4]), None)
            for path in argv[5:]:
                self.files.pop(path, None)
            outcome = Outcome()
        elif role == "qga-mkdir":
            outcome = Outcome()
        else:
            if argv[0].startswith("/nonexistent"):
                return Reply(error_class="GenericError", desc="Failed to execute child process")
            outcome = self.program(argv, stdin, env)
        self._pid += 1
        polls = 0 if role in ("qga-rm", "qga-cancel", "qga-mkdir") else self.polls  # ours: quick
        self.processes[self._pid] = Process(outcome, polls, capture)
        return {"pid": self._pid}

    def do_exec_status(self, args: dict[str, Any]) -> Any:
        pid = args["pid"]
        if self.status_faults:
            return self.status_faults.pop(0)(pid)
        return self.status(pid)

    def status(self, pid: int) -> Any:
        process = self.processes.get(pid)
        if process is None:
            return Reply(error_class="GenericError", desc="Invalid parameter 'pid'")
        if process.polls_left > 0:
            process.polls_left -= 1
            return {"exited": False}
        del self.processes[pid]  # the agent forgets a process once it reported it exited
        outcome = process.outcome
        reply: dict[str, Any] = {"exited": True}
        if outcome.exitcode is not None:
            reply["exitcode"] = outcome.exitcode
        if outcome.signal is not None:
            reply["signal"] = outcome.signal
        if process.files:  # the wrapper: its helper writes small output, then removes it
            out, err = outcome.out, outcome.err
            if process.inline and process.capture and len(out) + len(err) <= process.inline:
                reply["out-data"] = base64.b64encode(out).decode()
                reply["err-data"] = base64.b64encode(err + run_module._INLINE_END).decode()
                for path in process.files:
                    self.files.pop(path, None)
        elif process.capture:
            limit = self.capture_limit
            reply["out-data"] = base64.b64encode(outcome.out[:limit]).decode()
            reply["err-data"] = base64.b64encode(outcome.err[:limit]).decode()
            reply["out-truncated"] = len(outcome.out) > limit
            reply["err-truncated"] = len(outcome.err) > limit
        return reply

    def do_file_open(self, args: dict[str, Any]) -> Any:
        path, mode = args["path"], args.get("mode", "r")
        if "w" in mode:
            self.files[path] = b""
        elif path not in self.files:
            return Reply(error_class="GenericError", desc=f"failed to open file '{path}'")
        handle = 2000 + len(self._handles)
        self._handles[handle] = [path, 0]
        return handle

    def do_file_read(self, args: dict[str, Any]) -> Any:
        if self.read_fault is not None:
            raise self.read_fault.error
        path, position = self._handles[args["handle"]]
        data = self.files[path][position : position + args["count"]]
        self._handles[args["handle"]][1] += len(data)
        eof = position + len(data) >= len(self.files[path])
        return {"count": len(data), "buf-b64": base64.b64encode(data).decode(), "eof": eof}

    def do_file_write(self, args: dict[str, Any]) -> Any:
        path = self._handles[args["handle"]][0]
        data = base64.b64decode(args["buf-b64"])
        self.files[path] += data
        return {"count": len(data), "eof": False}

    def do_file_seek(self, args: dict[str, Any]) -> Any:
        handle = self._handles[args["handle"]]
        return {"position": handle[1], "eof": False}  # only (0, cur) is asked

    def do_file_close(self, args: dict[str, Any]) -> Any:
        self._handles.pop(args["handle"])
        return {}

    def temp_files(self) -> list[str]:
        return sorted(path for path in self.files if "/qga-run/" in path)


@dataclass
class GuestAgentFault:
    error: Exception


class Clock:
    """A virtual clock for the run module: sleeps advance it and are recorded."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(run_module, "time", fake)
    return fake


def scripted(guest: FakeGuest, *, libvirt_like: bool = False) -> tuple[GuestAgent, FakeTransport]:
    """An agent on ``guest``; ``libvirt_like``: with libvirt's request and reply limits."""
    limits = {"max_request_bytes": 64 << 10, "max_reply_bytes": 3 << 20} if libvirt_like else {}
    transport = FakeTransport(guest, target="fake guest", **limits)
    return GuestAgent(transport), transport


def lost(error: Exception) -> Callable[[int], Any]:
    """A status fault: the agent processed the request, the reply never arrived."""

    def fault(pid: int) -> Any:
        raise error

    return fault


def timeout_error() -> AgentTimeoutError:
    return AgentTimeoutError("no reply within 60 s", command="guest-exec-status")


# --- polling and results ----------------------------------------------------------------


def test_a_quick_command_costs_one_poll_after_half_a_millisecond(clock: Clock) -> None:
    guest = FakeGuest()
    agent, transport = scripted(guest)
    result = agent.run(["/bin/echo", "hi"])
    assert result.ok
    assert result.stdout == b"hi\n"
    assert [r.command for r in transport.requests] == ["guest-exec", "guest-exec-status"]
    assert clock.sleeps == [run_module.FIRST_POLL]
    assert result.duration == pytest.approx(run_module.FIRST_POLL)


def test_polling_backs_off_to_the_ceiling(clock: Clock) -> None:
    guest = FakeGuest(polls=12)
    agent, transport = scripted(guest)
    agent.run(["/bin/true"])
    assert len(clock.sleeps) == 13
    first = run_module.FIRST_POLL
    assert clock.sleeps[:4] == [first, first * 2, first * 4, first * 8]
    assert all(b >= a for a, b in zip(clock.sleeps, clock.sleeps[1:], strict=False))
    assert max(clock.sleeps) == run_module.POLL_CEILING
    # a minute-long command costs about 4 calls a second, not thousands
    assert sum(r.command == "guest-exec-status" for r in transport.requests) == 13


def test_the_first_poll_waits_most_of_the_quickest_run_seen(clock: Clock) -> None:
    guest = FakeGuest(polls=3)
    agent, _ = scripted(guest)
    agent.run(["/bin/true"])
    quickest = sum(clock.sleeps)  # the virtual clock moves only when run() sleeps
    assert quickest == pytest.approx(run_module.FIRST_POLL * 15)  # 0.5, 1, 2 and 4 ms
    clock.sleeps.clear()
    guest.polls = 1
    agent.run(["/bin/true"])
    # A poll that cannot yet say "exited" costs a slow guest CPU time: the first waits.
    first = run_module.FIRST_POLL_SHARE * quickest
    assert clock.sleeps == [pytest.approx(first), run_module.FIRST_POLL * 2]


def test_the_run_timeout_bounds_each_status_wait(clock: Clock) -> None:
    seen: list[float] = []
    guest = FakeGuest()

    class Recording(FakeTransport):
        def execute(self, request: Request, timeout: float) -> Reply:
            if request.command == "guest-exec-status":
                seen.append(timeout)
            return super().execute(request, timeout)

    agent = GuestAgent(Recording(guest), timeout=2)
    agent.run(["/bin/true"], timeout=3)  # a status reply waits until the deadline, no more
    assert seen[0] == pytest.approx(3, abs=0.01)
    agent.run(["/bin/true"], timeout=0.1)
    assert seen[1] == run_module.MIN_STATUS_WAIT
    agent.run(["/bin/true"])  # no deadline: generously, a lost reply is lost output
    assert seen[2] == run_module.STATUS_TIMEOUT


def test_exit_code_stderr_signal_and_argv_checks(clock: Clock) -> None:
    agent, _ = scripted(FakeGuest())
    failed = agent.run(["fail"])
    assert (failed.exitcode, failed.signal, failed.ok) == (3, None, False)
    assert failed.stderr == b"it went wrong\n"
    killed = agent.run(["kill"])
    assert (killed.exitcode, killed.signal, killed.ok) == (None, 9, False)
    assert killed.describe() == "killed by signal 9"
    with pytest.raises(TypeError, match="run_shell"):
        agent.run("echo hi")
    with pytest.raises(ValueError, match="empty"):
        agent.run([])


def test_check_raises_with_the_result_and_stderr(clock: Clock) -> None:
    agent, _ = scripted(FakeGuest())
    with pytest.raises(CommandFailedError) as caught:
        agent.run(["fail", "now"], check=True)
    assert caught.value.result.exitcode == 3
    assert caught.value.result.stderr == b"it went wrong\n"
    assert "exit code 3" in str(caught.value)
    assert "it went wrong" in str(caught.value)
    assert "'fail now'" in str(caught.value)
    assert agent.run(["/bin/echo"], check=True).ok


def test_input_env_and_capture_reach_the_agent(clock: Clock) -> None:
    agent, transport = scripted(FakeGuest())
    assert agent.run(["/bin/cat"], input=b"\x00\xffdata").stdout == b"\x00\xffdata"
    assert agent.run(["env"], env={"A": "1", "B": "x=y"}).stdout == b"A=1\nB=x=y\n"
    quiet = agent.run(["/bin/echo", "hi"], capture=False)
    assert quiet.stdout == b""
    assert quiet.ok
    assert "capture-output" not in (transport.requests[-2].arguments or {})


def test_run_shell_goes_through_bin_sh(clock: Clock) -> None:
    guest = FakeGuest()
    agent, _ = scripted(guest)
    agent.run_shell("echo a | grep a")
    assert guest.started[-1] == ["/bin/sh", "-c", "echo a | grep a"]


def test_truncation_flags_come_from_the_agent(clock: Clock) -> None:
    guest = FakeGuest(capture_limit=4)
    guest.program = lambda argv, stdin, env: Outcome(out=b"123456", err=b"12")
    agent, _ = scripted(guest)
    result = agent.run(["anything"])
    assert (result.stdout, result.stdout_truncated) == (b"1234", True)
    assert (result.stderr, result.stderr_truncated) == (b"12", False)


def test_result_text_and_json() -> None:
    result = RunResult(
        argv=("x",),
        pid=1,
        exitcode=0,
        signal=None,
        stdout="héllo".encode("cp850"),
        stderr=b"\xff",
        duration=0.5,
    )
    assert result.stdout_text("cp850") == "héllo"
    assert result.stdout_text() == "h\ufffdllo"  # wrong encoding: replaced, no error
    assert result.stderr_text() == "\ufffd"
    dumped = json.loads(result.model_dump_json())
    assert set(dumped) == {
        "argv",
        "pid",
        "exitcode",
        "signal",
        "stdout",
        "stderr",
        "stdout_truncated",
        "stderr_truncated",
        "duration",
    }
    assert base64.b64decode(dumped["stderr"]) == b"\xff"
    assert RunResult.model_validate_json(result.model_dump_json()) == result


# --- timeouts and collect ---------------------------------------------------------------


def test_timeout_raises_with_the_pid_and_collect_resumes(clock: Clock) -> None:
    guest = FakeGuest(polls=1000)
    agent, _ = scripted(guest)
    start = clock.now
    with pytest.raises(CommandTimeoutError) as caught:
        agent.run(["/bin/echo", "late"], timeout=2.0)
    error = caught.value
    assert not isinstance(error, AgentTimeoutError)  # the agent answered: still running
    assert (error.code, error.is_unreachable) == (ERR_TIMED_OUT, False)
    assert error.pid in guest.processes  # still running, output still with the agent
    assert error.argv == ("/bin/echo", "late")
    assert clock.now - start == pytest.approx(2.0)  # the last poll lands on the deadline
    assert error.handle is not None
    assert error.handle.pid == error.pid
    assert "collect(error.handle)" in str(error)
    guest.processes[error.pid].polls_left = 2
    elsewhere, _ = scripted(guest)  # another object (or process: the handle is JSON)
    result = elsewhere.collect(RunHandle.loads(error.handle.dumps()))
    assert result.stdout == b"late\n"
    assert result.argv == ("/bin/echo", "late")
    assert result.duration > 2.0  # counted from run()


def test_collect_of_a_pid_started_elsewhere(clock: Clock) -> None:
    guest = FakeGuest()
    agent, _ = scripted(guest)
    pid = agent.exec("/bin/echo", ["raw"], capture_output=True)
    result = agent.collect(pid)
    assert (result.argv, result.stdout) == ((), b"raw\n")
    with pytest.raises(AgentCommandError, match="pid"):
        agent.collect(pid)  # already collected: the agent forgot it


# --- a lost status reply ----------------------------------------------------------------


def test_a_status_unanswered_at_the_deadline_is_a_command_timeout_not_an_agent_one(
    clock: Clock,
) -> None:
    """The run's timeout passed while the agent did not answer: still the run's timeout
    (the handle collects it later), but the agent was not reached this time."""
    guest = FakeGuest(polls=1000)

    def unanswered(pid: int) -> Any:
        clock.now += 5  # the status request waited past the run's deadline
        raise timeout_error()

    guest.status_faults.append(unanswered)
    agent, _ = scripted(guest)
    with pytest.raises(CommandTimeoutError) as caught:
        agent.run(["/bin/echo", "x"], timeout=2)
    error = caught.value
    assert "did not report its status in time" in str(error)
    assert not isinstance(error, AgentTimeoutError)
    assert isinstance(error.__cause__, AgentTimeoutError)
    assert (error.code, error.is_unreachable) == (ERR_TIMED_OUT, True)
    assert error.handle is not None


def test_lost_reply_while_running_loses_nothing(clock: Clock) -> None:
    guest = FakeGuest(polls=2)
    guest.status_faults.append(lost(timeout_error()))  # the agent never saw this one
    agent, _ = scripted(guest)
    assert agent.run(["/bin/echo", "kept"]).stdout == b"kept\n"


def test_lost_reply_after_exit_is_reported_with_the_pid(clock: Clock) -> None:
    guest = FakeGuest()

    def consumed_then_lost(pid: int) -> Any:
        guest.status(pid)  # the agent answered, and forgot the process
        raise ConnectionLostError("lost the connection", command="guest-exec-status")

    guest.status_faults.append(consumed_then_lost)
    agent, _ = scripted(guest)
    with pytest.raises(OutputLostError) as caught:
        agent.run(["/bin/echo", "gone"])
    error = caught.value
    assert error.pid == 1001
    assert error.certain
    assert error.guest_files == ()
    assert isinstance(error.__cause__, ConnectionLostError)
    assert "is lost" in str(error)
    assert "'/bin/echo gone' (pid 1001)" in str(error)


def test_lost_reply_and_agent_gone_is_maybe_lost_and_collect_can_retry(clock: Clock) -> None:
    guest = FakeGuest()
    guest.status_faults += [lost(timeout_error()), lost(timeout_error())]
    agent, _ = scripted(guest)
    with pytest.raises(OutputLostError) as caught:
        agent.run(["/bin/echo", "later"])
    assert not caught.value.certain
    assert "maybe lost" in str(caught.value)
    # It reports the first lost reply (raised from it), whose code it takes.
    assert isinstance(caught.value.__cause__, AgentTimeoutError)
    assert (caught.value.code, caught.value.is_unreachable) == (ERR_TIMED_OUT, True)
    assert agent.collect(caught.value.pid).stdout == b"later\n"  # it was still there


def test_reply_too_large_for_the_backend_is_reported(clock: Clock) -> None:
    guest = FakeGuest()
    guest.status_faults.append(lost(ReplyTooLargeError("too large")))
    agent, _ = scripted(guest)
    with pytest.raises(OutputLostError) as caught:
        agent.run(["/bin/echo"], capture_via="agent")
    assert caught.value.certain
    assert "capture_via='files'" in str(caught.value)


def test_other_agent_errors_while_polling_are_raised_as_they_are(clock: Clock) -> None:
    guest = FakeGuest()
    guest.status_faults.append(lambda pid: Reply(error_class="GenericError", desc="boom"))
    agent, _ = scripted(guest)
    with pytest.raises(AgentCommandError, match="boom"):
        agent.run(["/bin/true"])


# --- output in guest files (backends with a reply limit) --------------------------------


def test_libvirt_like_backend_captures_in_guest_files_and_cleans_up(clock: Clock) -> None:
    guest = FakeGuest()
    agent, transport = scripted(guest, libvirt_like=True)
    result = agent.run(["/bin/echo", "via", "files"])
    assert result.stdout == b"via files\n"
    assert result.argv == ("/bin/echo", "via", "files")
    wrapper = guest.started[0]
    assert wrapper[:2] == ["/bin/sh", "-c"]
    assert 'exec "$@"' in wrapper[2]
    assert wrapper[-3:] == ["/bin/echo", "via", "files"]
    assert wrapper[4] == "/tmp/qga-run"
    # Small output comes back in the wrapper's own status reply, bounded by the wrapper
    # to a third of what the backend carries: exec and status, no file or rm calls.
    assert (transport.requests[1].arguments or {})["capture-output"] is True
    assert wrapper[7] == str(run_module.INLINE_LIMIT) == str(1 << 20)
    assert [r.command for r in transport.requests] == [
        "guest-get-osinfo",
        "guest-exec",
        "guest-exec-status",
    ]
    assert guest.temp_files() == []  # removed
    assert guest.processes == {}
    failed = agent.run(["fail"])
    assert (failed.exitcode, failed.stderr) == (3, b"it went wrong\n")
    assert wrapper[8] == "1"  # tidied once per agent object
    assert guest.started[1][8] == ""


def test_large_output_spills_to_files_read_back_then_removed(clock: Clock) -> None:
    guest = FakeGuest()
    big = bytes(range(256)) * 8192  # 2 MiB: over what may come back in a status reply
    guest.program = lambda argv, stdin, env: Outcome(out=big, err=b"e\n")
    agent, transport = scripted(guest, libvirt_like=True)
    result = agent.run(["big"])
    assert (result.stdout, result.stderr) == (big, b"e\n")
    commands = [r.command for r in transport.requests]
    assert "guest-file-read" in commands
    assert guest.temp_files() == []
    assert guest.processes == {}  # and the rm was reaped


def test_output_from_a_wrapper_without_its_helper_is_read_from_the_files(clock: Clock) -> None:
    guest = FakeGuest(helper=False)  # no /proc, the helper killed: no end mark
    agent, _ = scripted(guest, libvirt_like=True)
    assert agent.run(["/bin/echo", "via", "files"]).stdout == b"via files\n"
    assert guest.temp_files() == []


def test_windows_guest_through_libvirt_is_captured_by_the_agent(clock: Clock) -> None:
    guest = FakeGuest(os_id="mswindows")
    agent, transport = scripted(guest, libvirt_like=True)
    assert agent.run(["/bin/echo", "win"]).stdout == b"win\n"
    assert guest.started == [["/bin/echo", "win"]]
    agent.run(["/bin/echo", "again"])
    assert sum(r.command == "guest-get-osinfo" for r in transport.requests) == 1  # asked once


def test_socket_like_backend_uses_agent_capture_unless_told(clock: Clock) -> None:
    guest = FakeGuest()
    agent, transport = scripted(guest)
    agent.run(["/bin/echo"])
    assert guest.started == [["/bin/echo"]]
    assert "guest-get-osinfo" not in [r.command for r in transport.requests]
    assert agent.run(["/bin/echo", "f"], capture_via="files").stdout == b"f\n"
    assert guest.started[1][:2] == ["/bin/sh", "-c"]


def test_files_are_truncated_at_the_output_limit(
    clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(run_module, "OUTPUT_LIMIT", 10)
    guest = FakeGuest()
    guest.program = lambda argv, stdin, env: Outcome(out=b"x" * 25, err=b"y" * 10)
    agent, _ = scripted(guest, libvirt_like=True)
    result = agent.run(["big"])
    assert (result.stdout, result.stdout_truncated) == (b"x" * 10, True)
    assert (result.stderr, result.stderr_truncated) == (b"y" * 10, False)


def test_large_input_is_uploaded_then_removed(clock: Clock) -> None:
    guest = FakeGuest()
    agent, transport = scripted(guest, libvirt_like=True)
    data = bytes(range(256)) * 1024  # 256 KiB: far above libvirt's 64 KiB requests
    result = agent.run(["/bin/cat"], input=data)
    assert result.stdout == data
    exec_request = next(r for r in transport.requests if r.command == "guest-exec")
    assert "input-data" not in (exec_request.arguments or {})
    assert len(json.dumps(exec_request.arguments, default=str)) < 64 << 10
    assert guest.temp_files() == []
    small = agent.run(["/bin/cat"], input=b"inline")
    assert small.stdout == b"inline"


def test_large_input_with_agent_capture_is_refused_before_it_runs(clock: Clock) -> None:
    def refuse(request: Request) -> Any:
        if len(json.dumps(request.arguments, default=str)) > 64 << 10:
            raise RequestTooLargeError("too large", command=request.command)
        return guest(request)

    guest = FakeGuest(os_id="mswindows")  # no capture in files: the agent's
    transport = FakeTransport(refuse, max_request_bytes=64 << 10, max_reply_bytes=3 << 20)
    with pytest.raises(RequestTooLargeError):
        GuestAgent(transport).run(["/bin/cat"], input=b"x" * (1 << 20), capture_via="agent")
    assert guest.started == []


def test_agent_capture_is_refused_where_its_reply_could_break_libvirt(clock: Clock) -> None:
    guest = FakeGuest()
    agent, _ = scripted(guest, libvirt_like=True)
    with pytest.raises(ValueError, match="breaks the agent channel"):
        agent.run(["/bin/echo", "big"], capture_via="agent")
    assert guest.started == []  # nothing was sent


def test_failed_read_back_keeps_the_files_and_names_them(clock: Clock) -> None:
    guest = FakeGuest(helper=False)
    guest.read_fault = GuestAgentFault(ConnectionLostError("lost", command="guest-file-read"))
    agent, _ = scripted(guest, libvirt_like=True)
    with pytest.raises(OutputLostError) as caught:
        agent.run(["/bin/echo", "kept"])
    error = caught.value
    assert len(error.guest_files) == 2
    assert guest.files[error.guest_files[0]] == b"kept\n"  # still there, not removed
    assert all(path in str(error) for path in error.guest_files)


def test_lost_status_in_file_mode_still_has_the_output_in_files(clock: Clock) -> None:
    guest = FakeGuest(helper=False)  # output too large for the status reply: in files

    def consumed_then_lost(pid: int) -> Any:
        guest.status(pid)
        raise timeout_error()

    guest.status_faults.append(consumed_then_lost)
    agent, _ = scripted(guest, libvirt_like=True)
    with pytest.raises(OutputLostError) as caught:
        agent.run(["/bin/echo", "safe"])
    assert guest.files[caught.value.guest_files[0]] == b"safe\n"
    assert "the exit status of" in str(caught.value)  # only that is lost
    assert caught.value.guest_files[0] in str(caught.value)


def test_lost_status_that_carried_small_output_says_the_output_is_lost(clock: Clock) -> None:
    guest = FakeGuest()

    def consumed_then_lost(pid: int) -> Any:
        guest.status(pid)  # the reply carried the output; the helper removed the files
        raise timeout_error()

    guest.status_faults.append(consumed_then_lost)
    agent, _ = scripted(guest, libvirt_like=True)
    with pytest.raises(OutputLostError) as caught:
        agent.run(["/bin/echo", "small"])
    assert caught.value.certain
    assert caught.value.guest_files == ()  # no file is named that is not there
    assert "the output of" in str(caught.value)


def test_timeout_in_file_mode_then_collect_reads_the_files(clock: Clock) -> None:
    guest = FakeGuest(polls=100)
    agent, _ = scripted(guest, libvirt_like=True)
    with pytest.raises(CommandTimeoutError) as caught:
        agent.run(["/bin/echo", "slow"], timeout=1)
    guest.processes[caught.value.pid].polls_left = 0
    assert agent.collect(caught.value.pid).stdout == b"slow\n"
    assert guest.temp_files() == []


def test_nothing_is_logged(clock: Clock, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    agent, _ = scripted(FakeGuest(), libvirt_like=True)
    agent.run(["/bin/cat"], input=b"secret-input")
    assert "secret-input" not in caplog.text


# --- the host's real qemu-ga (socket backend) --------------------------------------------


@pytest.mark.agent
def test_real_exit_code_stdout_stderr(agent: GuestAgent) -> None:
    result = agent.run(["/bin/sh", "-c", "echo out; echo err >&2; exit 7"])
    assert (result.exitcode, result.signal) == (7, None)
    assert (result.stdout, result.stderr) == (b"out\n", b"err\n")
    assert not result.ok
    assert result.pid > 0
    assert 0 < result.duration < 5


@pytest.mark.agent
def test_real_stdin_env_and_signal(agent: GuestAgent) -> None:
    data = bytes(range(256)) * 4000
    assert agent.run(["/bin/cat"], input=data).stdout == data
    assert agent.run(["/bin/sh", "-c", "echo $X"], env={"X": "y z"}).stdout == b"y z\n"
    killed = agent.run_shell("kill -9 $$")
    assert (killed.exitcode, killed.signal) == (None, 9)


@pytest.mark.agent
def test_real_true_is_quick(agent: GuestAgent) -> None:
    agent.ping()
    durations = sorted(agent.run(["/bin/true"]).duration for _ in range(15))
    assert durations[7] < 0.05  # median; the benchmark measures it properly


@pytest.mark.agent
def test_real_timeout_then_collect(agent: GuestAgent) -> None:
    with pytest.raises(CommandTimeoutError) as caught:
        agent.run_shell("sleep 1; echo done", timeout=0.3)
    result = agent.collect(caught.value.pid, timeout=10)
    assert (result.stdout, result.exitcode) == (b"done\n", 0)
    assert result.duration >= 1.0


@pytest.mark.agent
def test_real_check_and_missing_program(agent: GuestAgent) -> None:
    with pytest.raises(CommandFailedError) as caught:
        agent.run_shell("echo nope >&2; exit 2", check=True)
    assert caught.value.result.stderr == b"nope\n"
    missing = agent.run(["/nonexistent/program"])  # as a shell says it, on every path
    assert (missing.exitcode, missing.stderr) == (127, b"/nonexistent/program: command not found\n")
    for via in ("agent", "files"):
        again = agent.run(["no-such-program"], capture_via=via)
        assert (again.exitcode, again.stderr) == (127, b"no-such-program: command not found\n")


@pytest.mark.agent
def test_real_truncation_at_16_mib(agent: GuestAgent) -> None:
    result = agent.with_timeout(30).run_shell("head -c 17000000 /dev/zero")
    assert result.stdout_truncated
    assert len(result.stdout) == 16 << 20
    assert not result.stderr_truncated


@pytest.mark.agent
def test_real_capture_in_files_on_the_host(agent: GuestAgent, tmp_path: Any) -> None:
    agent.run_temp_dir = str(tmp_path)
    result = agent.run_shell("echo to-file; echo e >&2; exit 5", capture_via="files")
    assert (result.stdout, result.stderr, result.exitcode) == (b"to-file\n", b"e\n", 5)
    private = tmp_path / "qga-run"
    assert list(private.iterdir()) == []  # cleaned up
    assert private.stat().st_mode & 0o777 == 0o700  # no other user reads the output


# --- the tiny guest: libvirt (output in files) and raw socket (output by the agent) ------


def guest_agent(lab: Lab, backend: str) -> GuestAgent:
    return GuestAgent.from_domain(lab.ok if backend == "libvirt" else lab.sock, timeout=30)


BACKENDS = ["libvirt", "socket"]


@pytest.mark.vm
@pytest.mark.parametrize("backend", BACKENDS)
def test_vm_exit_code_streams_stdin_env(lab: Lab, backend: str) -> None:
    agent = guest_agent(lab, backend)
    result = agent.run(
        ["/bin/sh", "-c", 'cat; echo "$V"; echo err >&2; exit 4'], input=b"in\n", env={"V": "v"}
    )
    assert (result.stdout, result.stderr, result.exitcode) == (b"in\nv\n", b"err\n", 4)
    with pytest.raises(CommandFailedError) as caught:
        agent.run(["/bin/sh", "-c", "exit 9"], check=True)
    assert caught.value.result.exitcode == 9
    assert agent.run(["/bin/true"]).ok


@pytest.mark.vm
@pytest.mark.parametrize("backend", BACKENDS)
def test_vm_timeout_then_collect(lab: Lab, backend: str) -> None:
    agent = guest_agent(lab, backend)
    with pytest.raises(CommandTimeoutError) as caught:
        agent.run(["/bin/sh", "-c", "sleep 2; echo slept"], timeout=0.3)
    result = agent.collect(caught.value.pid, timeout=30)
    assert (result.stdout, result.exitcode) == (b"slept\n", 0)


@pytest.mark.vm
def test_vm_output_above_libvirts_reply_limit_arrives_whole(lab: Lab) -> None:
    agent = guest_agent(lab, "libvirt")
    result = agent.run_shell("yes abcdefgh | head -c 5000000")
    expected = (b"abcdefgh\n" * 555556)[:5000000]
    assert hashlib.sha256(result.stdout).digest() == hashlib.sha256(expected).digest()
    assert not result.stdout_truncated
    leftovers = agent.run_shell('ls -A /tmp/qga-run | grep -v "^$$[.]" || true').stdout
    assert leftovers == b""
    agent.ping()  # the channel is fine


@pytest.mark.vm
def test_vm_truncation_through_libvirt(lab: Lab) -> None:
    result = guest_agent(lab, "libvirt").run_shell("head -c 17000000 /dev/zero; echo e >&2")
    assert result.stdout_truncated
    assert len(result.stdout) == 16 << 20
    assert (result.stderr, result.stderr_truncated) == (b"e\n", False)


def test_the_new_errors_are_drawn_exported_and_typed() -> None:
    import qga_libvirt
    from qga_libvirt import errors

    new = {
        "CommandTimeoutError": errors.GuestAgentError,
        "ShutdownTimeoutError": errors.GuestAgentError,
        "OutputLostError": errors.GuestAgentError,
        "CommandFailedError": errors.GuestAgentError,
        "ThawError": errors.GuestAgentError,
        "FreezeTimeoutError": errors.GuestAgentError,
    }
    for name, base in new.items():
        assert name in (errors.__doc__ or "")
        assert name in errors.__all__
        assert getattr(qga_libvirt, name) is getattr(errors, name)
        assert issubclass(getattr(errors, name), base)
    cause = ConnectionLostError("x", writing=True)
    lost_output = OutputLostError("y", pid=3)
    lost_output.__cause__ = cause  # as raise ... from cause leaves it
    assert (lost_output.code, lost_output.pid, lost_output.certain) == (1002, 3, True)
    assert errors.FreezeTimeoutError("z").code == errors.ERR_TIMED_OUT
    assert "RunResult" in qga_libvirt.__all__


def test_cancel_kills_and_removes_every_capture_file(clock: Clock) -> None:
    guest = FakeGuest(polls=1000)
    agent, _ = scripted(guest, libvirt_like=True)
    with pytest.raises(CommandTimeoutError) as caught:
        agent.run(["/bin/echo", "slow"], timeout=1)
    handle = caught.value.handle
    assert handle is not None
    assert sorted(handle.files) == guest.temp_files()  # named from the pid, in the guest
    assert handle.files[0] == f"/tmp/qga-run/{handle.pid}.out"
    scripted(guest, libvirt_like=True)[0].cancel(RunHandle.loads(handle.dumps()))
    assert guest.temp_files() == []
    assert handle.pid not in guest.processes


def test_interrupted_run_kills_the_process_unless_kept(clock: Clock) -> None:
    guest = FakeGuest(polls=1000)
    agent, _ = scripted(guest, libvirt_like=True)

    def interrupt(stream: str, data: bytes) -> None:
        raise KeyboardInterrupt

    guest.program = lambda argv, stdin, env: Outcome(out=b"some output")
    with pytest.raises(KeyboardInterrupt):
        agent.run(["/bin/yes"], output=interrupt)
    assert guest.temp_files() == []
    assert guest.processes == {}
    with pytest.raises(KeyboardInterrupt) as caught:
        agent.run(["/bin/yes"], output=interrupt, keep=True)
    assert len(guest.temp_files()) == 2  # left running, with its output
    assert "goes on" in caught.value.__notes__[0]
