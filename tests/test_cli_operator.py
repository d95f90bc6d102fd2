"""qga for an operator coming from virsh: its words, virsh habits, the helpers people reach for.

Subprocess runs of the installed qga against the host's real qemu-ga (--socket), and
against libvirt's test driver (``-c test:///...``) for what needs domains but no guest.
The tiny-guest half is at the end (``lab``): setting the time and passwords, which the
host agent blocks.
"""

from __future__ import annotations

import datetime
import io
import json
import os
import pty
import pwd
import signal
import subprocess
import time
from pathlib import Path

import pytest

from qga_libvirt import FakeTransport, GuestAgent, SocketTransport
from qga_libvirt.cli import app
from qga_libvirt.cli.core import Context, GlobalOptions
from qga_libvirt.cli.helpers import check_public_key
from qga_libvirt.cli.inputs import UsageError
from qga_libvirt.cli.output import Output
from qga_libvirt.testing import HostAgent

from .lab import Lab
from .test_cli import QGA, one_error_line, qga, ssh_key
from .test_commands_real import throwaway_user  # noqa: F401  (the fixture, shared)

NODE_XML = """\
<node>
  <domain type='test'>
    <name>web1</name><memory>65536</memory><os><type>hvm</type></os>
    <devices><channel type='unix'><source mode='bind' path='/nonexistent/web1.sock'/>
      <target type='virtio' name='org.qemu.guest_agent.0'/></channel></devices>
  </domain>
  <domain type='test'>
    <name>noagent</name><memory>65536</memory><os><type>hvm</type></os>
  </domain>
  <domain type='test' xmlns:test='http://libvirt.org/schemas/domain/test/1.0'>
    <name>web2</name><memory>65536</memory><os><type>hvm</type></os>
    <devices><channel type='unix'><source mode='bind' path='/nonexistent/web2.sock'/>
      <target type='virtio' name='org.qemu.guest_agent.0'/></channel></devices>
    <test:runstate>5</test:runstate>
  </domain>
</node>
"""


@pytest.fixture
def sock(host_agent: HostAgent) -> Path:
    return host_agent.socket


@pytest.fixture
def test_uri(tmp_path: Path) -> str:
    """A libvirt test-driver URI with three domains: web1 (running, agent channel),
    noagent (running, no channel), web2 (shut off, agent channel)."""
    node = tmp_path / "node.xml"
    node.write_text(NODE_XML)
    return f"test://{node}"


def on_a_terminal(*args: str | os.PathLike[str], stdin: bytes = b"") -> tuple[int, str]:
    """Run qga with its stdout on a pseudo-terminal; (exit status, what it printed)."""
    leader, follower = pty.openpty()
    try:
        done = subprocess.run(
            [str(QGA), *map(str, args)],
            input=stdin,
            stdout=follower,
            stderr=subprocess.PIPE,
            timeout=60,
            check=False,
        )
        os.close(follower)
        follower = -1
        printed = b""
        while True:
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # EIO: the terminal's other side is closed and drained
                break
            if not chunk:
                break
            printed += chunk
    finally:
        if follower >= 0:
            os.close(follower)
        os.close(leader)
    return done.returncode, printed.decode().replace("\r\n", "\n")


# --- words ----------------------------------------------------------------------------


def test_a_missing_domain_is_told_in_qga_words(test_uri: str) -> None:
    result = qga("-c", test_uri, "nosuch", "ping")
    assert result.returncode == 5
    line = one_error_line(result)
    assert "domain 'nosuch' not found" in line
    assert f"`qga -c {test_uri} list --all`" in line
    assert "give -c URI for another hypervisor" in line
    assert "uri=" not in line


def test_json_errors_carry_the_qga_words(test_uri: str) -> None:
    result = qga("-c", test_uri, "--json", "nosuch", "ping")
    error = json.loads(result.stdout)["error"]
    assert "-c URI" in error["message"]
    assert "uri=" not in error["message"]


@pytest.mark.agent
def test_a_process_past_its_timeout_is_told_how_to_collect_it(sock: Path) -> None:
    killed = qga("--socket", sock, "--timeout", "1", "exec", "--", "sleep", "30")
    assert killed.returncode == 6
    line = one_error_line(killed)
    assert "still running" in line
    assert "was killed" in line  # nothing left behind, unless --keep
    result = qga("--socket", sock, "--timeout", "1", "exec", "--keep", "--", "sh", "-c", "sleep 2")
    assert result.returncode == 6
    line = one_error_line(result)
    assert "collect(" not in line
    assert "run([" not in line
    pid = line.split("exec --collect ")[1].split("`")[0]
    assert f"`qga --socket {sock} exec --collect {pid}`" in line
    # the advice works: the process is collected, its status is qga's
    assert qga("--socket", sock, "exec", "--collect", pid).returncode == 0


@pytest.mark.agent
def test_a_fleet_process_past_its_timeout_is_told_how_to_collect_it_from_its_target(
    sock: Path,
) -> None:
    """In a fleet the hint names the target that runs the process, not the command line's
    (which has no single domain or socket)."""
    done = qga(
        "--timeout", "1", "fleet", str(sock), "--", "exec", "--keep", "--", "sh", "-c", "sleep 2"
    )
    assert done.returncode == 8
    line = done.stdout.decode()
    pid = line.split("exec --collect ")[1].split("`")[0]
    assert f"`qga --socket {sock} exec --collect {pid}`" in line
    assert qga("--socket", sock, "exec", "--collect", pid).returncode == 0


@pytest.mark.agent
def test_exec_status_prints_the_output_not_a_repr(sock: Path) -> None:
    script = "printf 'hello\\n'; printf 'oops\\n' >&2; exit 3"
    started = qga("--socket", sock, "exec", "--no-wait", "--", "/bin/sh", "-c", script)
    pid = started.stdout.decode().strip()
    deadline = time.monotonic() + 30
    while True:
        status = qga("--socket", sock, "exec-status", pid)
        if status.stdout != b"running\n" or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert status.stdout == b"hello\n"
    assert status.stderr == b"oops\n"
    assert status.returncode == 3
    assert b"out_data" not in status.stdout
    running = qga("--socket", sock, "exec", "--no-wait", "--", "sleep", "5").stdout.decode().strip()
    still = qga("--socket", sock, "exec-status", running)
    assert (still.returncode, still.stdout) == (0, b"running\n")
    as_json = json.loads(qga("--socket", sock, "exec-status", running, "--json").stdout)
    assert as_json["exited"] is False


def test_timeout_help_does_not_promise_a_cap_for_exec() -> None:
    text = qga("help", "exec").stdout.decode()
    assert "as long as it takes" in " ".join(text.split())


@pytest.mark.agent
def test_local_file_errors_name_the_file_not_a_temporary(sock: Path, tmp_path: Path) -> None:
    target = tmp_path / "missing-dir" / "hostname"
    result = qga("--socket", sock, "cp", ":/etc/hostname", target)
    assert result.returncode == 1
    line = one_error_line(result)
    assert f"local file {target}: No such file or directory" in line
    assert "Errno" not in line
    assert ".part" not in line


@pytest.mark.agent
def test_empty_results_say_so(sock: Path, throwaway_user: pwd.struct_passwd) -> None:  # noqa: F811
    empty = qga("--socket", sock, "ssh-get-authorized-keys", throwaway_user.pw_name)
    assert empty.returncode == 3  # the agent's own command: no file is its error
    users = json.loads(qga("--socket", sock, "get-users", "--json").stdout)
    if not users:
        assert qga("--socket", sock, "get-users").stdout == b"(the agent reported none)\n"


# --- habits ---------------------------------------------------------------------------


def test_the_virsh_order_is_told_the_qga_order() -> None:
    result = qga("ping", "web1")
    assert result.returncode == 2
    assert "did you mean `qga web1 ping`?" in one_error_line(result)
    alone = qga("ping")
    assert alone.returncode == 2
    assert "ping needs a domain first: qga DOMAIN ping" in one_error_line(alone)
    host = qga("web1", "list")
    assert host.returncode == 2
    assert "list takes no domain or socket before it" in one_error_line(host)


@pytest.mark.agent
def test_a_domain_named_like_a_command_still_works(sock: Path) -> None:
    # `qga --socket S ping` is not affected, nor a domain called "ping" given a command
    assert qga("--socket", sock, "ping").returncode == 0


@pytest.mark.agent
def test_help_after_the_target_is_help(sock: Path) -> None:
    everything = qga("--socket", sock, "help")
    assert everything.returncode == 0
    assert b"commands of the host:" in everything.stdout
    one = qga("web1", "help", "ping")
    assert one.returncode == 0
    assert one.stdout.startswith(b"usage: qga DOMAIN ping")


@pytest.mark.agent
@pytest.mark.parametrize(
    "words",
    [
        ("-j", "--socket", "{sock}", "osinfo"),
        ("--socket", "{sock}", "-j", "osinfo"),
        ("--socket", "{sock}", "--json", "osinfo"),
        ("--socket", "{sock}", "osinfo", "-j"),
        ("--socket", "{sock}", "osinfo", "--json"),
    ],
)
def test_json_anywhere_on_the_line(sock: Path, words: tuple[str, ...]) -> None:
    result = qga(*(word.format(sock=sock) for word in words))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["kernel_release"]


@pytest.mark.agent
def test_json_after_the_program_of_exec_is_the_program_s(sock: Path) -> None:
    result = qga("--socket", sock, "exec", "--", "echo", "-j", "--json")
    assert result.stdout == b"-j --json\n"


@pytest.mark.agent
@pytest.mark.parametrize(
    ("alias", "command"),
    [("hostname", "get-host-name"), ("network", "ifaddr"), ("cpustats", "get-cpustats")],
)
def test_aliases(sock: Path, alias: str, command: str) -> None:
    by_alias = qga("--socket", sock, alias, "--json")
    assert by_alias.returncode == 0, by_alias.stderr
    if alias == "cpustats":  # counters move between two calls
        assert isinstance(json.loads(by_alias.stdout), list)
    elif alias == "network":  # so do the interfaces' packet counters
        by_name = qga("--socket", sock, command, "--json").stdout

        def without_counters(text: bytes) -> list[dict[str, object]]:
            return [{k: v for k, v in nic.items() if k != "statistics"} for nic in json.loads(text)]

        assert without_counters(by_alias.stdout) == without_counters(by_name)
    else:
        assert by_alias.stdout == qga("--socket", sock, command, "--json").stdout
    assert alias in qga("--help").stdout.decode()


def test_list_takes_virsh_s_flags(test_uri: str) -> None:
    def names(*flags: str) -> list[str]:
        result = qga("-c", test_uri, "list", "--name", *flags)
        assert result.returncode == 0, result.stderr
        return result.stdout.decode().split()

    assert sorted(names()) == ["noagent", "web1", "web2"]
    assert sorted(names("--all")) == ["noagent", "web1", "web2"]
    assert sorted(names("--state-running")) == ["noagent", "web1"]
    assert names("--state-shutoff") == ["web2"]
    assert names("--inactive") == ["web2"]
    assert sorted(names("--state-running", "--state-shutoff")) == ["noagent", "web1", "web2"]
    assert names("--state-paused") == []
    table = qga("-c", test_uri, "list", "--state-paused").stdout.decode()
    assert table.splitlines()[-1] == "(no domains)"


def test_fleet_all_and_state_pick_the_domains_with_an_agent(test_uri: str) -> None:
    def targets(*flags: str) -> list[str]:
        result = qga("-c", test_uri, "fleet", *flags, "--", "ping")
        return [line.split()[0] for line in result.stdout.decode().splitlines()]

    # the test driver has no agent: every target fails, but the targets are the point
    assert targets("--all") == ["web1"]
    assert targets("--state-shutoff") == ["web2"]
    assert sorted(targets("--state-running", "--state-shutoff")) == ["web1", "web2"]
    assert targets("--state-paused") == []
    none = qga("-c", test_uri, "fleet", "--state-paused", "--", "ping")
    assert none.returncode == 0
    assert "no domain with a guest agent channel" in one_error_line(none)
    assert qga("-c", test_uri, "fleet", "--", "ping").returncode == 2


# --- helpers --------------------------------------------------------------------------


@pytest.mark.agent
def test_time_shows_the_guest_clock_and_its_offset(sock: Path) -> None:
    text = qga("--socket", sock, "time").stdout.decode().splitlines()
    assert [line.split(":")[0] for line in text] == ["local", "UTC", "clock"]
    clock = json.loads(qga("--socket", sock, "time", "--json").stdout)
    utc = datetime.datetime.fromisoformat(clock["utc"])
    assert abs(utc - datetime.datetime.now(datetime.UTC)) < datetime.timedelta(seconds=60)
    assert abs(clock["offset_seconds"]) < 5  # the host's own clock
    assert datetime.datetime.fromisoformat(clock["local"]) == utc
    # setting is blocked on the host agent: refused, exit 4 (the tiny guest sets it)
    assert qga("--socket", sock, "time", "--sync").returncode == 4


def test_time_set_takes_an_iso_time() -> None:
    result = qga("--socket", "/nonexistent", "time", "--set", "1700000000000000000")
    assert result.returncode == 2
    assert "not an ISO time" in one_error_line(result)
    both = qga("--socket", "/nonexistent", "time", "--sync", "--set", "2026-01-01T00:00:00Z")
    assert both.returncode == 2


@pytest.mark.agent
def test_guestinfo_summarises_the_guest(sock: Path) -> None:
    text = qga("--socket", sock, "guestinfo").stdout.decode()
    for label in ("Agent version:", "OS:", "Hostname:", "Timezone:", "Users:", "Filesystems:"):
        assert label in text
    info = json.loads(qga("--socket", sock, "guestinfo", "--json").stdout)
    assert set(info) >= {"agent", "os", "hostname", "timezone", "users", "filesystems"}
    assert info["hostname"] == qga("--socket", sock, "hostname").stdout.decode().strip()
    assert any(fs["mountpoint"] == "/" and fs["total_bytes"] for fs in info["filesystems"])
    only = json.loads(qga("--socket", sock, "guestinfo", "--hostname", "--json").stdout)
    assert set(only) == {"agent", "hostname"}


@pytest.mark.agent
def test_guestinfo_asks_each_command_once(sock: Path) -> None:
    real = SocketTransport(sock)
    counting = FakeTransport(lambda request: real.execute(request, 10))
    guestinfo = app.agent_subcommands()["guestinfo"]
    namespace = app.subcommand_parser(guestinfo, "qga D guestinfo").parse_args([])
    options = app.top_parser().parse_args(["--socket", str(sock)])
    ctx = Context(
        Output(json_mode=True, stdout=io.BytesIO()), GlobalOptions.from_namespace(options)
    )
    try:
        outcome = guestinfo.prepare(ctx, namespace)(GuestAgent(counting))
    finally:
        real.close()
    sent = [request.command for request in counting.requests]
    assert sorted(sent) == sorted({*sent}), sent  # none twice
    assert len(sent) == 7, sent  # guest-info, then one per section
    assert outcome.value["hostname"]


@pytest.mark.agent
def test_ssh_keys_of_a_user_without_authorized_keys(
    sock: Path,
    throwaway_user: pwd.struct_passwd,  # noqa: F811
) -> None:
    name = throwaway_user.pw_name
    listed = qga("--socket", sock, "ssh-keys", "list", name)
    assert (listed.returncode, listed.stdout, listed.stderr) == (0, b"", b"")
    assert json.loads(qga("--socket", sock, "ssh-keys", "list", name, "--json").stdout) == []
    unknown = qga("--socket", sock, "ssh-keys", "list", "nosuchuser")
    assert unknown.returncode == 2
    assert "user nosuchuser does not exist in the guest" in one_error_line(unknown)


@pytest.mark.agent
def test_ssh_keys_add_refuses_garbage(sock: Path, throwaway_user: pwd.struct_passwd) -> None:  # noqa: F811
    name = throwaway_user.pw_name
    good = ssh_key("good")
    for garbage, words in [
        ("hello", "not an SSH public key"),
        ("ssh-ed25519", "not an SSH public key"),
        ("ssh-ed25519 not*base64", "its body is not base64"),
        ("ssh-rsa " + good.split()[1], "its body is not a ssh-rsa key"),
    ]:
        result = qga("--socket", sock, "ssh-keys", "add", name, good, garbage)
        assert result.returncode == 2, garbage
        line = one_error_line(result)
        assert "key 2" in line
        assert words in line
    assert qga("--socket", sock, "ssh-keys", "list", name).stdout == b""  # nothing sent
    authorized = Path(throwaway_user.pw_dir) / ".ssh" / "authorized_keys"
    assert not authorized.exists()


@pytest.mark.agent
def test_actions_confirm_on_a_terminal_only(sock: Path, throwaway_user: pwd.struct_passwd) -> None:  # noqa: F811
    name = throwaway_user.pw_name
    code, printed = on_a_terminal("--socket", sock, "ssh-keys", "add", name, ssh_key("a"))
    assert code == 0
    assert printed == f"1 key(s) added to the authorized keys of {name}\n"
    piped = qga("--socket", sock, "ssh-keys", "add", name, ssh_key("b"))
    assert (piped.returncode, piped.stdout) == (0, b"")
    # the agent commands that change the guest and answer nothing confirm too
    code, printed = on_a_terminal("--socket", sock, "ssh-add-authorized-keys", name, ssh_key("c"))
    assert (code, printed) == (0, "ssh-add-authorized-keys: done\n")
    code, printed = on_a_terminal("--socket", sock, "ping")
    assert (code, printed) == (0, "")  # reading commands stay silent


@pytest.mark.agent
def test_watch_runs_a_read_only_command_again(sock: Path) -> None:
    result = qga("--socket", sock, "watch", "--interval", "0.2", "--count", "3", "hostname")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.decode().splitlines()
    titles = [line for line in lines if line.startswith("every 0.2 s: qga --socket")]
    assert len(titles) == 3
    hostname = qga("--socket", sock, "hostname").stdout.decode().strip()
    assert lines.count(hostname) == 3
    code, printed = on_a_terminal(
        "--socket", sock, "watch", "--count", "2", "--interval", "0.1", "ping"
    )
    assert code == 0
    assert printed.count("\x1b[H\x1b[2J") == 2  # redrawn in place
    for words, complaint in [
        (("passwd", "root"), "change nothing in the guest"),
        (("exec", "--", "true"), "change nothing in the guest"),
        (("call", "guest-ping"), "change nothing in the guest"),
        (("--json", "hostname"), "watch is for people"),
        ((), "watch needs a command"),
    ]:
        refused = qga("--socket", sock, "watch", *words)
        assert refused.returncode == 2, words
        assert complaint in one_error_line(refused)


@pytest.mark.agent
def test_watch_ends_on_ctrl_c_in_one_line(sock: Path) -> None:
    watching = subprocess.Popen(
        [str(QGA), "--socket", str(sock), "watch", "--interval", "0.2", "hostname"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    time.sleep(2)  # started, a few rounds shown
    watching.send_signal(signal.SIGINT)
    out, err = watching.communicate(timeout=30)
    assert watching.returncode == 130
    assert err == b"qga: interrupted\n"
    assert out.count(b"every 0.2 s: qga") >= 2
    assert qga("--socket", sock, "ping").returncode == 0  # the agent is fine after


def test_public_keys_with_options_and_certificates_pass() -> None:
    key = ssh_key("me")
    check_public_key(key)
    check_public_key(f'no-pty,from="10.0.0.1" {key}')
    with pytest.raises(UsageError, match="not an SSH public key"):
        check_public_key("")


def test_every_alias_names_a_command() -> None:
    subs = app.agent_subcommands()
    completed = {name for name, _ in app.completion_words().agent_commands}
    for alias, name in app.ALIASES.items():
        assert name in subs
        assert alias not in subs
        assert alias in completed


# --- the tiny guest (setting the clock and passwords is blocked on the host agent) -------


@pytest.mark.vm
def test_vm_time_set_and_sync(lab: Lab) -> None:
    try:
        result = qga(lab.ok, "time", "--set", "2020-02-02T02:02:02Z", "--json")
        assert result.returncode == 0, result.stderr
        clock = json.loads(result.stdout)
        assert clock["utc"].startswith("2020-02-02T02:02")
        assert clock["offset_seconds"] < -3600
    finally:
        synced = qga(lab.ok, "time", "--sync", "--json")
    assert synced.returncode == 0, synced.stderr
    assert abs(json.loads(synced.stdout)["offset_seconds"]) < 5


@pytest.mark.vm
def test_vm_passwd_for_an_unknown_user_says_so(lab: Lab) -> None:
    result = qga(lab.ok, "passwd", "nosuchuser", stdin=b"a-password\n")
    assert result.returncode == 2
    assert "user nosuchuser does not exist in the guest" in one_error_line(result)
    assert b"a-password" not in result.stderr
    code, printed = on_a_terminal(lab.ok, "passwd", "tester", stdin=b"another-password\n")
    assert code == 0
    assert printed == "password of tester changed\n"


@pytest.mark.vm
def test_vm_unreachable_agents_are_told_in_qga_words(lab: Lab) -> None:
    never = qga(lab.never, "ping")
    assert never.returncode == 5
    assert f"`qga {lab.never} wait` waits for it" in one_error_line(never)
    wrong = qga("--backend", "socket", lab.ok, "ping")
    assert wrong.returncode == 5
    line = one_error_line(wrong)
    assert "give --backend libvirt" in line
    assert "backend=" not in line
    assert "''s" not in line
