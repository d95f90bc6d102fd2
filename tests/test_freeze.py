"""frozen(): freeze, always thaw, retry, watchdog. Scripted faults, then the tiny guest.

The host's agent has fsfreeze blocked: the host is never frozen. The real freezes run
on the tiny guest's ext4 data disk (``/mnt/data`` of ``lab.ok``).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from qga_libvirt import (
    AgentCommandError,
    AgentTimeoutError,
    CommandDisabledError,
    FakeTransport,
    FreezeTimeoutError,
    GuestAgent,
    GuestFrozenError,
    ThawError,
)
from qga_libvirt.cli import helpers
from qga_libvirt.models import FsfreezeStatus
from qga_libvirt.operations import freeze as freeze_module
from qga_libvirt.protocol import Reply
from qga_libvirt.transports.base import Request

from .lab import Lab
from .test_cli import QGA

# --- a scripted agent -------------------------------------------------------------------


class FreezingAgent:
    """Freezes and thaws like qemu-ga; ``thaw_failures`` thaws fail first."""

    def __init__(self, *, thaw_failures: int = 0, freeze: Callable[[], Any] | None = None) -> None:
        self.frozen = False
        self.thaw_failures = thaw_failures
        self.freeze = freeze
        self.calls: list[str] = []

    def __call__(self, request: Request) -> Any:
        command = request.command
        self.calls.append(command)
        if command in ("guest-fsfreeze-freeze", "guest-fsfreeze-freeze-list"):
            if self.frozen:
                desc = f"Command {command} has been disabled: the agent is in frozen state"
                return Reply(error_class="CommandNotFound", desc=desc)
            if self.freeze is not None:
                return self.freeze()
            self.frozen = True
            return len((request.arguments or {}).get("mountpoints", ["/", "/data"]))
        if command == "guest-fsfreeze-thaw":
            if self.thaw_failures:
                self.thaw_failures -= 1
                return Reply(error_class="GenericError", desc="failed to thaw: busy")
            thawed, self.frozen = int(self.frozen), False
            return thawed
        if command == "guest-fsfreeze-status":
            return "frozen" if self.frozen else "thawed"
        return {}


@pytest.fixture(autouse=True)
def quick_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    class Clock:
        monotonic = staticmethod(time.monotonic)

        @staticmethod
        def sleep(seconds: float) -> None:
            pass

    monkeypatch.setattr(freeze_module, "time", Clock)


def until(done: Callable[[], bool], seconds: float) -> None:
    """Wait until ``done()``: the body of a frozen block that outlives its watchdog."""
    deadline = time.monotonic() + seconds
    while not done():
        assert time.monotonic() < deadline, "the watchdog did not thaw"
        time.sleep(0.01)


def scripted(fake: FreezingAgent, target: str = "domain 'web1'") -> GuestAgent:
    return GuestAgent(FakeTransport(fake, target=target))


def test_freezes_yields_the_count_and_thaws() -> None:
    fake = FreezingAgent()
    agent = scripted(fake)
    with agent.frozen(timeout=None) as count:
        assert count == 2
        assert fake.frozen
    assert not fake.frozen
    assert fake.calls == ["guest-fsfreeze-freeze", "guest-fsfreeze-thaw"]


def test_a_mountpoint_list_uses_freeze_list() -> None:
    fake = FreezingAgent()
    with scripted(fake).frozen(["/data"], timeout=None) as count:
        assert count == 1
    assert fake.calls[0] == "guest-fsfreeze-freeze-list"


def test_thaws_when_the_body_raises() -> None:
    fake = FreezingAgent()
    with pytest.raises(KeyError), scripted(fake).frozen(timeout=None):
        raise KeyError("body")
    assert not fake.frozen


def test_thaw_is_retried() -> None:
    fake = FreezingAgent(thaw_failures=2)
    with scripted(fake).frozen(timeout=None):
        pass
    assert not fake.frozen
    assert fake.calls.count("guest-fsfreeze-thaw") == 3


def test_thaw_that_keeps_failing_raises_still_frozen_with_how_to_thaw() -> None:
    fake = FreezingAgent(thaw_failures=100)
    with pytest.raises(ThawError) as caught, scripted(fake).frozen(timeout=None):
        pass
    error = caught.value
    assert fake.frozen
    assert error.attempts == freeze_module.THAW_ATTEMPTS
    assert fake.calls.count("guest-fsfreeze-thaw") == freeze_module.THAW_ATTEMPTS
    assert "STILL FROZEN" in str(error)
    assert "virsh domfsthaw web1" in str(error)
    assert "qga web1 fsfreeze-thaw" in str(error)
    assert isinstance(error.__cause__, AgentCommandError)


def test_thaw_error_wins_over_the_body_error_which_stays_its_context() -> None:
    fake = FreezingAgent(thaw_failures=100)
    with pytest.raises(ThawError) as caught, scripted(fake).frozen(timeout=None):
        raise ValueError("body")
    assert isinstance(caught.value.__context__, ValueError)


def test_thaw_error_on_a_socket_names_the_socket() -> None:
    fake = FreezingAgent(thaw_failures=100)
    with pytest.raises(ThawError) as caught, scripted(fake, "socket /run/q.sock").frozen():
        pass
    assert "socket /run/q.sock" in str(caught.value)
    assert "fsfreeze_thaw()" in str(caught.value)


def test_failed_thaw_of_a_guest_that_reports_thawed_is_fine() -> None:
    fake = FreezingAgent()
    original = fake.__call__

    def thaw_reply_lost(request: Request) -> Any:
        if request.command == "guest-fsfreeze-thaw":
            fake.frozen = False  # it thawed, the reply got lost
            raise AgentTimeoutError("no reply", command=request.command)
        return original(request)

    agent = GuestAgent(FakeTransport(thaw_reply_lost))
    with agent.frozen(timeout=None):
        pass
    assert not fake.frozen


def test_a_freeze_whose_reply_is_lost_is_thawed_before_raising() -> None:
    fake = FreezingAgent()

    def freeze_then_lose_reply() -> Any:
        fake.frozen = True
        raise AgentTimeoutError("no reply", command="guest-fsfreeze-freeze")

    fake.freeze = freeze_then_lose_reply
    with pytest.raises(AgentTimeoutError), scripted(fake).frozen():
        pytest.fail("the body must not run")
    assert not fake.frozen
    assert fake.calls[-1] == "guest-fsfreeze-thaw"


def test_someone_elses_freeze_is_left_alone() -> None:
    fake = FreezingAgent()
    fake.frozen = True
    with pytest.raises(CommandDisabledError), scripted(fake).frozen():
        pytest.fail("the body must not run")
    assert fake.frozen  # not ours to thaw
    assert "guest-fsfreeze-thaw" not in fake.calls


def test_watchdog_thaws_and_the_exit_reports_it() -> None:
    fake = FreezingAgent()
    with pytest.raises(FreezeTimeoutError) as caught, scripted(fake).frozen(timeout=0.05):
        until(lambda: not fake.frozen, 5)  # thawed while the body still runs
    assert "watchdog" in str(caught.value)


def test_watchdog_notes_itself_on_the_body_error() -> None:
    fake = FreezingAgent()

    def body() -> None:
        until(lambda: not fake.frozen, 5)
        raise RuntimeError("body")

    with pytest.raises(RuntimeError) as caught, scripted(fake).frozen(timeout=0.05):
        body()
    assert any("watchdog" in note for note in caught.value.__notes__)


def test_a_quick_body_does_not_trip_the_watchdog() -> None:
    fake = FreezingAgent()
    with scripted(fake).frozen(timeout=30):
        pass
    assert fake.calls.count("guest-fsfreeze-thaw") == 1


@pytest.fixture(autouse=True)
def no_guard_left(request: pytest.FixtureRequest) -> Iterator[None]:
    """After a test on the lab: no thaw guard of its guests still runs on the host (each
    ends once released, or once it has thawed)."""
    yield
    if "lab" not in request.fixturenames:
        return
    lab: Lab = request.getfixturevalue("lab")
    pattern = f"thawguard.*domain '{lab.prefix}-"
    deadline = time.monotonic() + 30
    while True:
        left = subprocess.run(["pgrep", "-af", pattern], capture_output=True, text=True).stdout
        if not left:
            return
        assert time.monotonic() < deadline, f"thaw guards left running: {left}"
        time.sleep(0.5)


# --- the tiny guest's data disk ---------------------------------------------------------


@pytest.fixture
def guest(lab: Lab) -> Iterator[GuestAgent]:
    agent = GuestAgent.from_domain(lab.ok, timeout=30)
    assert agent.fsfreeze_status() == FsfreezeStatus.THAWED
    yield agent
    if agent.fsfreeze_status() != FsfreezeStatus.THAWED:  # never leave the lab frozen
        agent.fsfreeze_thaw()
        pytest.fail("the guest was left frozen")


@pytest.mark.vm
def test_vm_frozen_inside_thawed_after_and_refusals_while_frozen(guest: GuestAgent) -> None:
    with guest.frozen() as count:
        assert count >= 1  # /mnt/data (tmpfs and rootfs cannot freeze)
        assert guest.fsfreeze_status() == FsfreezeStatus.FROZEN
        with pytest.raises(GuestFrozenError):
            guest.get_osinfo()
        with pytest.raises(GuestFrozenError):
            guest.run(["/bin/true"])
        guest.ping()  # frozen-safe
    assert guest.fsfreeze_status() == FsfreezeStatus.THAWED
    assert guest.get_osinfo().kernel_release


@pytest.mark.vm
def test_vm_mountpoint_list(guest: GuestAgent) -> None:
    with guest.frozen(["/mnt/data"]) as count:
        assert count == 1
        assert guest.fsfreeze_status() == FsfreezeStatus.FROZEN
    assert guest.fsfreeze_status() == FsfreezeStatus.THAWED
    with guest.frozen(["/no/such/mount"]) as none:
        assert none == 0


@pytest.mark.vm
def test_vm_thaws_when_the_body_raises(guest: GuestAgent) -> None:
    with pytest.raises(ZeroDivisionError), guest.frozen(["/mnt/data"]):
        _ = 1 / 0
    assert guest.fsfreeze_status() == FsfreezeStatus.THAWED
    guest.write_file("/mnt/data/after-freeze", b"writable again")
    assert guest.read_file("/mnt/data/after-freeze") == b"writable again"


@pytest.mark.vm
def test_vm_watchdog_thaws_a_body_that_runs_too_long(guest: GuestAgent) -> None:
    with pytest.raises(FreezeTimeoutError), guest.frozen(["/mnt/data"], timeout=0.5):
        until(lambda: guest.fsfreeze_status() == FsfreezeStatus.THAWED, 20)
    assert guest.fsfreeze_status() == FsfreezeStatus.THAWED


def test_ctrl_c_while_the_freeze_is_on_its_way_thaws_and_goes_on() -> None:
    def frozen_then_interrupted() -> Any:
        fake.frozen = True  # the guest froze; the reply never made it back
        raise KeyboardInterrupt

    fake = FreezingAgent(freeze=frozen_then_interrupted)
    with pytest.raises(KeyboardInterrupt), scripted(fake).frozen():
        pytest.fail("the body must not run")
    assert not fake.frozen
    assert fake.calls[-1] in ("guest-fsfreeze-thaw", "guest-fsfreeze-status")


def test_a_thaw_that_breaks_untyped_is_a_thaw_error_not_silence() -> None:
    fake = FreezingAgent()

    def broken(request: Request) -> Any:
        if request.command == "guest-fsfreeze-thaw":
            raise RuntimeError("a request is already in flight")
        return fake(request)

    agent = GuestAgent(FakeTransport(broken, target="domain 'web1'"))
    with pytest.raises(ThawError, match="STILL FROZEN") as caught, agent.frozen():
        raise KeyboardInterrupt
    assert isinstance(caught.value.__context__, KeyboardInterrupt | RuntimeError)


# --- interrupted and killed freezers on the tiny guests ---------------------------------

FREEZER = """
import sys, time
from qga_libvirt import GuestAgent
agent = GuestAgent.from_domain(sys.argv[1], timeout=30)
with agent.frozen(sys.argv[2:] or None, timeout=600):
    print("frozen", flush=True)
    while True:
        agent.ping()
"""


def start_freezer(name: str, *mountpoints: str) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        [sys.executable, "-c", FREEZER, name, *mountpoints],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    if line != b"frozen\n":
        process.kill()
        pytest.fail(f"the freezer did not freeze: {process.communicate()[1].decode()}")
    return process


def thawed_within(agent: GuestAgent, seconds: float) -> float:
    """Seconds until the guest reports thawed; fails after ``seconds``."""
    start = time.monotonic()
    while agent.fsfreeze_status() != FsfreezeStatus.THAWED:
        if time.monotonic() - start > seconds:
            agent.fsfreeze_thaw()
            pytest.fail(f"still frozen {seconds} s after the freezer ended")
        time.sleep(0.2)
    return time.monotonic() - start


@pytest.mark.vm
@pytest.mark.parametrize("kind", ["ok", "sock"])
def test_vm_a_freezer_killed_with_sigkill_is_thawed_by_its_guard(lab: Lab, kind: str) -> None:
    name = getattr(lab, kind)
    mountpoints = ["/mnt/data"] if kind == "ok" else []  # sock: no data disk, freeze "all"
    process = start_freezer(name, *mountpoints)
    process.send_signal(signal.SIGKILL)
    process.wait(30)
    agent = GuestAgent.from_domain(name, timeout=30)
    with agent:
        thawed_within(agent, 30)
        agent.ping()


@pytest.mark.vm
@pytest.mark.parametrize("kind", ["ok", "sock"])
def test_vm_ctrl_c_mid_call_inside_the_block_thaws_or_says_still_frozen(
    lab: Lab, kind: str
) -> None:
    name = getattr(lab, kind)
    mountpoints = ["/mnt/data"] if kind == "ok" else []
    process = start_freezer(name, *mountpoints)
    time.sleep(0.3)  # mid-ping, nearly always
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    raised = [
        line for line in err.decode().splitlines() if re.match(r"^[\w.]+(Error|Interrupt)\b", line)
    ]
    assert raised, err.decode()
    # What goes out is the interrupt, or ThawError while the transport cannot thaw, never
    # an untyped error; and the guest is thawed (by the process, or by its guard).
    assert raised[-1].startswith(("KeyboardInterrupt", "qga_libvirt.errors.ThawError")), raised
    agent = GuestAgent.from_domain(name, timeout=30)
    with agent:
        thawed_within(agent, 30)


@pytest.mark.vm
@pytest.mark.parametrize(
    "host_command",
    [
        "echo in; sleep 600",
        # A grandchild that misses the SIGINT (dash defers one that comes between the echo
        # and the fork of sleep; here it is ignored outright): it held qga's stdout and
        # stderr open after qga exited, so whoever read them to their end hung.
        "trap '' INT; echo in; sleep 600",
    ],
    ids=["plain", "grandchild-ignores-sigint"],
)
def test_vm_qga_freeze_interrupted_with_ctrl_c_thaws(lab: Lab, host_command: str) -> None:
    process = subprocess.Popen(
        [str(QGA), lab.ok, "freeze", "-m", "/mnt/data", "--", "sh", "-c", host_command],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,  # its own process group, as a terminal's foreground job
    )
    assert process.stdout is not None
    assert process.stdout.readline() == b"in\n"
    os.killpg(process.pid, signal.SIGINT)  # Ctrl-C: to qga's process group
    try:
        _, err = process.communicate(timeout=60)  # stdout and stderr read to their end
    except subprocess.TimeoutExpired:
        left = host_processes_of(process.pid)
        subprocess.run(["pkill", "-KILL", "-s", str(process.pid)], check=False)
        process.communicate()
        pytest.fail(f"qga's stdout and stderr still open 60 s after Ctrl-C, held by {left}")
    assert b"Traceback" not in err
    assert process.returncode == 130, err
    assert host_processes_of(process.pid) == []
    with GuestAgent.from_domain(lab.ok, timeout=30) as agent:
        assert agent.fsfreeze_status() == FsfreezeStatus.THAWED  # at once, not by the guard


def host_processes_of(session: int) -> list[str]:
    """The live processes of a session (a zombie holds nothing: left out)."""
    found = subprocess.run(
        ["ps", "-o", "stat=,pid=,pgid=,wchan=,args=", "-s", str(session)],
        capture_output=True,
        text=True,
    )
    return [line for line in found.stdout.splitlines() if not line.lstrip().startswith("Z")]


HOST_RUNNER = """
import sys
from qga_libvirt.cli.helpers import _run_host
_run_host(sys.argv[1:])
"""


@pytest.mark.parametrize(
    "host_command",
    [
        # SIGINT to qga while it starts the command (or waits for it), as in a full run.
        "kill -INT $PPID; echo in; sleep 600",
        "trap '' INT; kill -INT $PPID; echo in; sleep 600",
    ],
    ids=["plain", "ignores-sigint"],
)
def test_an_interrupted_host_command_ends_with_everything_it_started(host_command: str) -> None:
    # freeze's host command, without a guest: qga interrupted while it starts or runs it
    # ends its whole process group; nothing keeps qga's stdout and stderr open.
    process = subprocess.Popen(
        [sys.executable, "-c", HOST_RUNNER, "sh", "-c", host_command],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        _, err = process.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        left = host_processes_of(process.pid)
        subprocess.run(["pkill", "-KILL", "-s", str(process.pid)], check=False)
        process.communicate()
        pytest.fail(f"stdout and stderr still open 30 s after SIGINT, held by {left}")
    assert b"KeyboardInterrupt" in err
    assert host_processes_of(process.pid) == []


def test_a_ctrl_c_while_the_host_command_starts_is_raised_once_it_can_be_ended() -> None:
    # Raised inside Popen (between the fork and its return), the KeyboardInterrupt would
    # lose the child: it is held until qga holds the process.
    deferred = helpers._DeferredInterrupt()
    with deferred:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.1)  # the handler runs: nothing raised
        with pytest.raises(KeyboardInterrupt):
            deferred.release()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


# --- the guard holds none of the freezer's stdio ----------------------------------------

GUARDED = """
import sys
from qga_libvirt.operations.thawguard import Reach, ThawGuard
guard = ThawGuard.start(Reach("nowhere", socket="/nonexistent/qga.sock"), 600)
print(guard.pid, flush=True)
sys.stdin.readline()
"""


def test_a_freezer_killed_does_not_keep_its_readers_waiting_for_the_guard() -> None:
    # The guard outlives a freezer killed with SIGKILL (here it keeps trying to thaw an
    # agent that is not there): reading the freezer's stdout and stderr to their end
    # must not wait for it.
    freezer = subprocess.Popen(
        [sys.executable, "-c", GUARDED],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert freezer.stdout is not None
    line = freezer.stdout.readline()
    assert line.strip().isdigit(), freezer.communicate(timeout=30)
    guard = int(line)
    try:
        held = {os.readlink(f"/proc/{guard}/fd/{fd}") for fd in os.listdir(f"/proc/{guard}/fd")}
        ours = {
            f"pipe:[{os.fstat(stream.fileno()).st_ino}]"
            for stream in (freezer.stdout, freezer.stderr)
            if stream is not None
        }
        assert not held & ours
        freezer.kill()
        freezer.communicate(timeout=30)  # before: the guard's 120 s of retries
        assert os.path.exists(f"/proc/{guard}")  # still trying: it did outlive the freezer
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(guard, signal.SIGKILL)
