"""The installed ``qga``, run as a subprocess against the host's real qemu-ga (--socket),
plus in-process checks of what the CLI derives from the declarations.

The VM half (domains by name through libvirt) is tests/test_cli_vm.py.
"""

from __future__ import annotations

import base64
import json
import os
import pwd
import re
import secrets
import shlex
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from qga_libvirt import (
    AgentCommandError,
    AgentTimeoutError,
    CommandDisabledError,
    CommandTimeoutError,
    ConnectionLostError,
    DomainNotFoundError,
    GuestAgent,
    GuestAgentError,
    OutputLostError,
    ProtocolError,
    ShutdownTimeoutError,
    ThawError,
    TransferError,
)
from qga_libvirt.cli import app, exits
from qga_libvirt.cli.derive import call_arguments, parameters, subcommand_name, wire_subcommand
from qga_libvirt.cli.helpers import HELPERS, parse_guest_spec
from qga_libvirt.cli.inputs import UsageError
from qga_libvirt.cli.output import human_size, table
from qga_libvirt.commands import Command, Commands, all_commands
from qga_libvirt.testing import HostAgent

from .test_cli_words import pythonisms
from .test_commands_real import throwaway_user  # noqa: F401  (the fixture, shared)

ROOT = Path(__file__).resolve().parent.parent
QGA = Path(sys.executable).with_name("qga")
CLI_SOURCES = sorted((ROOT / "qga_libvirt" / "cli").glob("*.py"))


def qga(*args: str | os.PathLike[str], stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    """Run the installed qga; stdin is a pipe carrying ``stdin`` (empty by default).

    Whatever qga itself says on stderr is checked for Python-isms, in every test.
    """
    if not QGA.exists():
        pytest.fail(f"{QGA} is not installed: run scripts/setup.sh (make setup)")
    result = subprocess.run(
        [str(QGA), *map(str, args)], input=stdin, capture_output=True, timeout=120, check=False
    )
    if "--debug" not in args:  # tracebacks are Python, on purpose
        for line in result.stderr.decode(errors="replace").splitlines():
            if line.startswith("qga: "):
                assert not pythonisms(line), (line, pythonisms(line))
    return result


def ssh_key(comment: str) -> str:
    """A fresh ed25519 public key line (random key material, the format of a real one)."""
    blob = b"".join(
        len(part).to_bytes(4, "big") + part for part in (b"ssh-ed25519", secrets.token_bytes(32))
    )
    return f"ssh-ed25519 {base64.b64encode(blob).decode()} {comment}"


def one_error_line(result: subprocess.CompletedProcess[bytes]) -> str:
    """The single stderr line of a failed run (and check that it is single and clean)."""
    text = result.stderr.decode()
    assert text.endswith("\n"), text
    assert text.count("\n") == 1, text
    assert "Traceback" not in text
    assert text.startswith("qga: ")
    return text


# --- derived from the declarations (no agent) -------------------------------------------


def test_every_declared_command_has_a_subcommand_that_runs_it() -> None:
    subs = app.agent_subcommands()
    for cmd in all_commands():
        sub = subs[subcommand_name(cmd)]
        assert cmd in sub.runs, (cmd.wire, sub.name)
        assert not cmd.wire.removeprefix("guest-").startswith("guest-")


def test_no_wire_name_is_written_in_the_cli() -> None:
    wires = {cmd.wire for cmd in all_commands()}
    for source in CLI_SOURCES:
        text = source.read_text()
        found = {
            wire for wire in wires if re.search(rf"(?<![\w-]){re.escape(wire)}(?![\w-])", text)
        }
        assert not found, f"{source.name} names {found}: derive it from commands.py"


@pytest.mark.parametrize("cmd", list(all_commands()), ids=lambda cmd: cmd.wire)
def test_every_parameter_is_an_argument_but_secrets(cmd: Command[Any, Any]) -> None:
    parser = app.subcommand_parser(wire_subcommand(cmd), "qga D x")
    dests = {action.dest for action in parser._actions}
    for param in parameters(cmd):
        assert (param.dest in dests) == (param.kind != "secret"), param


@pytest.mark.parametrize(
    ("cmd", "argv", "wire_arguments"),
    [
        (
            Commands.file_seek,
            ["1000", "5", "--whence", "end"],
            {"handle": 1000, "offset": 5, "whence": "end"},
        ),
        (
            Commands.file_seek,
            ["1000", "-3", "--whence", "1"],
            {"handle": 1000, "offset": -3, "whence": 1},
        ),
        (Commands.file_read, ["7"], {"handle": 7}),
        (
            Commands.fsfreeze_freeze_list,
            ["--mountpoints", "/a", "/b", "--mountpoints", "/c"],
            {"mountpoints": ["/a", "/b", "/c"]},
        ),
        (Commands.fsfreeze_freeze_list, [], None),
        (
            Commands.exec,
            ["/bin/x", "--args", "a", "b", "--env", "K=V", "E=", "--capture-output", "merged"],
            {"path": "/bin/x", "arg": ["a", "b"], "env": ["K=V", "E="], "capture-output": "merged"},
        ),
        (Commands.exec, ["/bin/x", "--capture-output"], {"path": "/bin/x", "capture-output": True}),
        (Commands.shutdown, ["--mode", "reboot"], {"mode": "reboot"}),
        (
            Commands.set_vcpus,
            ['{"logical-id": 1, "online": false}', '{"logical_id": 2, "online": true}'],
            {"vcpus": [{"logical-id": 1, "online": False}, {"logical-id": 2, "online": True}]},
        ),
        (
            Commands.ssh_add_authorized_keys,
            ["root", "k1", "k2", "--reset"],
            {"username": "root", "keys": ["k1", "k2"], "reset": True},
        ),
        (Commands.set_time, ["--time", "1700000000000000000"], {"time": 1700000000000000000}),
    ],
)
def test_parsed_arguments_make_the_declared_request(
    cmd: Command[Any, Any], argv: list[str], wire_arguments: dict[str, Any] | None
) -> None:
    namespace = app.subcommand_parser(wire_subcommand(cmd), "qga D x").parse_args(argv)
    assert cmd.arguments(**call_arguments(cmd, namespace)) == wire_arguments


def test_bytes_come_from_a_file(tmp_path: Path) -> None:
    data = secrets.token_bytes(100)
    (tmp_path / "blob").write_bytes(data)
    cmd = Commands.file_write
    namespace = app.subcommand_parser(wire_subcommand(cmd), "q").parse_args(
        ["3", str(tmp_path / "blob")]
    )
    arguments = cmd.arguments(**call_arguments(cmd, namespace))
    assert arguments is not None
    assert arguments["handle"] == 3
    assert str(arguments["buf-b64"]) == base64.b64encode(data).decode()


@pytest.mark.parametrize(
    ("cmd", "argv", "complaint"),
    [
        (Commands.file_read, ["x"], "x is not an integer"),
        (Commands.file_seek, ["1", "0", "--whence", "up"], "up is none of {set,cur,end} | N"),
        (Commands.shutdown, ["--mode", "off"], "off is not one of halt, powerdown, reboot"),
        (Commands.set_vcpus, ['{"online": true}'], "is not a JSON object as --help shows"),
        (Commands.exec, ["/bin/x", "--env", "NOEQUALS"], "NOEQUALS is not KEY=VALUE"),
        (Commands.ssh_add_authorized_keys, ["root"], "the following arguments are required"),
    ],
)
def test_bad_arguments_are_usage_errors(
    cmd: Command[Any, Any], argv: list[str], complaint: str
) -> None:
    with pytest.raises(UsageError) as caught:
        app.subcommand_parser(wire_subcommand(cmd), "qga D x").parse_args(argv)
    assert complaint in str(caught.value)


def test_exit_codes_by_error() -> None:
    timeout = AgentTimeoutError("slow")
    cases: list[tuple[BaseException, int]] = [
        (timeout, 6),
        (CommandTimeoutError("still running", pid=1, argv=["x"], timeout=1.0), 6),
        (ShutdownTimeoutError("still up"), 6),
        (DomainNotFoundError("no"), 5),
        (CommandDisabledError("off", error_class="CommandNotFound", desc="x"), 4),
        (AgentCommandError("no", error_class="GenericError", desc="x"), 3),
        (ConnectionLostError("gone"), 7),
        (ProtocolError("junk"), 7),
        (raised_from(TransferError("half", transferred=1, total=2, path="/x"), timeout), 6),
        (raised_from(ThawError("STILL FROZEN", attempts=5), timeout), 1),
        (raised_from(OutputLostError("lost", pid=1), timeout), 7),
        (OSError("local"), 1),
    ]
    for error, code in cases:
        assert exits.exit_code_for(error) == code, error
    documented = {code for code, _ in exits.EXIT_CODES}
    assert {str(code) for _, code in cases} <= documented


def raised_from(error: GuestAgentError, cause: GuestAgentError) -> GuestAgentError:
    """``error`` as ``raise error from cause`` leaves it."""
    error.__cause__ = cause
    return error


def test_guest_paths_are_told_from_local_ones() -> None:
    assert parse_guest_spec("web1:/etc/hosts") == ("web1", "/etc/hosts")
    assert parse_guest_spec(":/etc/hosts") == ("", "/etc/hosts")
    assert parse_guest_spec("web1:C:\\x") == ("web1", "C:\\x")
    assert parse_guest_spec("./a:b") is None
    assert parse_guest_spec("/tmp/a:b") is None
    assert parse_guest_spec("plain") is None
    assert parse_guest_spec("web1:") is None


def test_tables_and_sizes() -> None:
    assert table(["A", "Long"], [["xyz", "1"], ["", "22"]]) == [
        " A     Long",
        "------------",
        " xyz   1",
        "       22",
    ]
    assert [human_size(n) for n in (None, 0, 1023, 1536, 20 << 30)] == [
        "-",
        "0 B",
        "1023 B",
        "1.5 KiB",
        "20.0 GiB",
    ]


def _complete(script: str, *words: str) -> list[str]:
    """What bash completion offers for the last of ``words`` (the line so far)."""
    program = (
        f"{script}\nCOMP_WORDS=({' '.join(map(shlex.quote, words))}); "
        "COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 )); _qga; printf '%s\\n' \"${COMPREPLY[@]}\""
    )
    result = subprocess.run(
        ["bash", "-c", program], capture_output=True, text=True, check=True, timeout=30
    )
    return result.stdout.split()


def test_bash_completion() -> None:
    result = qga("completion", "bash")
    assert result.returncode == 0
    script = result.stdout.decode()
    assert "complete -o filenames -F _qga qga" in script
    assert _complete(script, "qga", "--socket", "/s", "get-os") == ["get-osinfo"]
    assert _complete(script, "qga", "dom", "fsfreeze-freeze") == [
        "fsfreeze-freeze",
        "fsfreeze-freeze-list",
    ]
    assert _complete(script, "qga", "dom", "file-seek", "--wh") == ["--whence"]
    assert _complete(script, "qga", "-d", "list", "ifa") == ["ifaddr"]
    assert _complete(script, "qga", "comp") == ["completion"]
    assert _complete(script, "qga", "completion", "") == ["bash", "zsh"]
    assert _complete(script, "qga", "--backend", "") == ["auto", "libvirt", "socket"]
    assert _complete(script, "qga", "dom", "ssh-keys", "") == ["list", "add", "remove"]


def test_zsh_completion_script() -> None:
    result = qga("completion", "zsh")
    assert result.returncode == 0
    script = result.stdout.decode()
    assert script.startswith("#compdef qga\n")
    assert "compdef _qga qga" in script
    for name, sub in app.agent_subcommands().items():
        assert f"'{name}:" in script, name
        assert sub.summary


# zsh's completion builtins, replaced by ones that print what they were given.
_ZSH_STUBS = r"""
compdef() { :; }
compadd() {
    local a rest=0
    for a in "$@"; do
        if (( rest )) || [[ $a != -* ]]; then print -r -- "$a"; elif [[ $a == -- ]]; then rest=1; fi
    done
}
_describe() { print -rl -- ${${(P)4}%%:*}; }
_files() { print -- "<files>"; }
_message() { :; }
"""


def _zsh_complete(script: str, *words: str) -> list[str]:
    """The candidates zsh completion offers after ``words`` (unfiltered by the prefix)."""
    quoted = " ".join(shlex.quote(word) for word in words)
    program = (
        f"{_ZSH_STUBS}\n{script}\nwords=({quoted}); CURRENT=$#words; PREFIX=${{words[-1]}}; _qga"
    )
    result = subprocess.run(
        ["zsh", "-f", "-c", program], capture_output=True, text=True, check=True, timeout=30
    )
    return result.stdout.split()


def test_zsh_completion_completes() -> None:
    if shutil.which("zsh") is None:
        pytest.skip("zsh is not installed")
    script = qga("completion", "zsh").stdout.decode()
    subprocess.run(["zsh", "-n"], input=script, text=True, check=True, timeout=30)
    assert set(app.HOST_COMMANDS) <= set(_zsh_complete(script, "qga", ""))
    assert _zsh_complete(script, "qga", "--socket", "/s", "") == list(app.agent_subcommands())
    assert "--whence" in _zsh_complete(script, "qga", "dom", "file-seek", "--wh")
    assert _zsh_complete(script, "qga", "completion", "") == ["bash", "zsh"]
    assert _zsh_complete(script, "qga", "dom", "ssh-keys", "") == ["list", "add", "remove"]
    assert _zsh_complete(script, "qga", "dom", "cp", "") == ["<files>"]


def test_usage_errors_are_one_line_and_exit_2() -> None:
    for args, words in [
        ((), "no command given"),
        (("--socket", "/nonexistent", "get-osinfi"), "did you mean get-osinfo"),
        (("--socket", "/nonexistent", "exec"), "exec needs the program"),
        (("--socket", "/nonexistent", "file-read", "x"), "x is not an integer"),
        (("--socket", "/s", "-d", "dom", "ping"), "not both"),
        (("--socket", "/s", "cp", "a", "b"), "cp needs a guest side"),
        (("cp", ":/a", "b"), "qga cp needs DOMAIN:/path"),
        (("fleet", "a", "b"), "fleet needs -- and a command"),
        (("fleet", "a", "--", "cp", ":/x", "y"), "does not run in a fleet"),
        (("--socket", "/s", "passwd", "root", "secret-on-argv"), "unrecognized arguments"),
        (("--socket", "/s", "ping", "--timeout", "0"), "the timeout must be positive"),
        (("--bogus",), "unrecognized arguments"),
    ]:
        result = qga(*args)
        assert result.returncode == 2, (args, result.stderr)
        assert words in one_error_line(result), args


def test_help_lists_every_command_and_the_exit_codes() -> None:
    result = qga("--help")
    assert result.returncode == 0
    text = result.stdout.decode()
    for name in [*app.agent_subcommands(), *app.HOST_COMMANDS]:
        assert re.search(rf"^  {re.escape(name)}\s", text, re.MULTILINE), name
    assert "exit codes:" in text
    sub_help = qga("help", "file-seek")
    assert sub_help.returncode == 0
    assert "usage: qga DOMAIN file-seek HANDLE OFFSET [--whence {set,cur,end}|N]" in (
        sub_help.stdout.decode()
    )


# --- against the host's real agent ------------------------------------------------------


@pytest.fixture
def sock(host_agent: HostAgent) -> Path:
    return host_agent.socket


@pytest.mark.agent
def test_get_osinfo_json_is_the_model_dump(sock: Path) -> None:
    result = qga("--socket", sock, "get-osinfo", "--json")
    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)
    with GuestAgent.from_socket(sock) as agent:
        assert printed == agent.get_osinfo().model_dump(mode="json")
    assert printed["kernel_release"] == os.uname().release
    before = qga("--json", "--socket", sock, "osinfo")  # --json before, the helper's name
    assert json.loads(before.stdout) == printed


@pytest.mark.agent
def test_osinfo_for_people(sock: Path) -> None:
    result = qga("--socket", sock, "osinfo")
    assert result.returncode == 0
    lines = result.stdout.decode().splitlines()
    assert f"kernel_release: {os.uname().release}" in lines
    assert f"machine: {os.uname().machine}" in lines
    assert not any(line.endswith(": -") for line in lines)  # absent fields are left out


@pytest.mark.agent
def test_info(sock: Path) -> None:
    with GuestAgent.from_socket(sock) as agent:
        info = agent.info()
    text = qga("--socket", sock, "info").stdout.decode().splitlines()
    assert text[0] == f"version: {info.version}"
    assert text[1].split() == ["Command", "Enabled", "Replies"]
    assert len(text) == 3 + len(info.supported_commands)
    assert any(line.split() == ["guest-set-time", "no", "yes"] for line in text)
    printed = json.loads(qga("--socket", sock, "info", "--json").stdout)
    assert printed == info.model_dump(mode="json")


@pytest.mark.agent
def test_ifaddr_fsinfo_users(sock: Path) -> None:
    ifaddr = qga("--socket", sock, "ifaddr").stdout.decode().splitlines()
    assert ifaddr[0].split() == ["Name", "MAC", "address", "Protocol", "Address"]
    assert any(line.split()[:1] == ["lo"] and "127.0.0.1/8" in line for line in ifaddr)
    names = [i["name"] for i in json.loads(qga("--socket", sock, "ifaddr", "--json").stdout)]
    with GuestAgent.from_socket(sock) as agent:
        assert names == [i.name for i in agent.network_get_interfaces()]

    fsinfo = qga("--socket", sock, "fsinfo").stdout.decode().splitlines()
    assert fsinfo[0].split() == ["Mountpoint", "Type", "Device", "Size", "Used", "Use%"]
    root = [line.split() for line in fsinfo[2:] if line.split()[:1] == ["/"]]
    assert root
    assert re.fullmatch(r"\d+%", root[0][-1])
    assert root[0][4] in ("KiB", "MiB", "GiB", "TiB")

    users = qga("--socket", sock, "users")
    assert users.returncode == 0
    logged_in = json.loads(qga("--socket", sock, "users", "--json").stdout)
    assert isinstance(logged_in, list)
    if logged_in:
        assert users.stdout.decode().splitlines()[0].split() == ["User", "Domain", "Login", "time"]
    else:  # said so, not a bare header
        assert users.stdout == b"nobody is logged in\n"


@pytest.mark.agent
def test_wire_commands_print_their_values(sock: Path, tmp_path: Path) -> None:
    assert qga("--socket", sock, "ping").stdout == b""
    assert qga("--socket", sock, "sync", "42").stdout == b"42\n"
    assert qga("--socket", sock, "get-host-name").stdout.decode().strip() == socket.gethostname()
    assert json.loads(qga("--socket", sock, "fsfreeze-status", "--json").stdout) == "thawed"
    vcpus = qga("--socket", sock, "get-vcpus").stdout.decode().splitlines()
    assert vcpus[0].split() == ["logical_id", "online", "can_offline"]
    with GuestAgent.from_socket(sock) as agent:
        assert len(vcpus) == 2 + len(agent.get_vcpus())


@pytest.mark.agent
def test_file_commands_one_by_one(sock: Path, tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    data = secrets.token_bytes(3000)
    opened = qga("--socket", sock, "file-open", path, "--mode", "wb")
    assert opened.returncode == 0, opened.stderr
    handle = opened.stdout.decode().strip()
    written = qga("--socket", sock, "file-write", handle, "-", "--json", stdin=data)
    assert json.loads(written.stdout)["count"] == len(data)
    assert qga("--socket", sock, "file-close", handle).returncode == 0
    assert path.read_bytes() == data

    handle = qga("--socket", sock, "file-open", path).stdout.decode().strip()
    read = json.loads(
        qga("--socket", sock, "file-read", handle, "--count", "10000", "--json").stdout
    )
    assert base64.b64decode(read["data"]) == data  # bytes are base64 in JSON
    assert read["count"] == len(data)
    seek = qga("--socket", sock, "file-seek", handle, "0", "--whence", "end", "--json")
    assert json.loads(seek.stdout)["position"] == len(data)
    assert qga("--socket", sock, "file-close", handle).returncode == 0
    again = qga("--socket", sock, "file-close", handle)
    assert again.returncode == 3
    assert "not been found" in one_error_line(again)


@pytest.mark.agent
def test_exec_prints_output_and_passes_the_exit_status(sock: Path) -> None:
    hi = qga("--socket", sock, "exec", "--", "/bin/echo", "hi")
    assert (hi.returncode, hi.stdout, hi.stderr) == (0, b"hi\n", b"")
    seven = qga("--socket", sock, "exec", "--", "/bin/sh", "-c", "echo out; echo err >&2; exit 7")
    assert (seven.returncode, seven.stdout, seven.stderr) == (7, b"out\n", b"err\n")
    killed = qga("--socket", sock, "shell", "kill -9 $$")
    assert killed.returncode == 128 + 9
    no_dashes = qga("--socket", sock, "exec", "/bin/echo", "-n", "x")
    assert no_dashes.stdout == b"x"


@pytest.mark.agent
def test_exec_passes_piped_stdin_as_bytes(sock: Path) -> None:
    data = bytes(range(256)) * 100
    result = qga("--socket", sock, "exec", "--", "/bin/cat", stdin=data)
    assert result.returncode == 0
    assert result.stdout == data
    ignored = qga("--socket", sock, "exec", "-n", "--", "/bin/cat", stdin=b"not read")
    assert ignored.stdout == b""
    wc = qga("--socket", sock, "shell", "wc -c", stdin=b"12345")
    assert wc.stdout.strip() == b"5"


@pytest.mark.agent
def test_exec_env_json_and_no_wait(sock: Path) -> None:
    result = qga(
        "--socket", sock, "exec", "--json", "-e", "A=1", "--", "/bin/sh", "-c", "echo $A; exit 3"
    )
    assert result.returncode == 3
    run = json.loads(result.stdout)
    assert run["argv"] == ["/bin/sh", "-c", "echo $A; exit 3"]
    assert base64.b64decode(run["stdout"]) == b"1\n"
    assert (run["exitcode"], run["signal"], run["stdout_truncated"]) == (3, None, False)
    assert set(run) == {
        "argv", "pid", "exitcode", "signal", "stdout", "stderr",
        "stdout_truncated", "stderr_truncated", "duration",
    }  # fmt: skip
    started = qga("--socket", sock, "exec", "--no-wait", "--", "/bin/echo", "later")
    pid = started.stdout.decode().strip()
    assert pid.isdigit()
    status = qga("--socket", sock, "exec-status", pid, "--json")
    for _ in range(50):
        if json.loads(status.stdout)["exited"]:
            break
        status = qga("--socket", sock, "exec-status", pid, "--json")
    assert base64.b64decode(json.loads(status.stdout)["out_data"]) == b"later\n"


@pytest.mark.agent
def test_exec_timeout_exits_6(sock: Path) -> None:
    result = qga("--socket", sock, "exec", "--timeout", "0.5", "--", "/bin/sleep", "5")
    assert result.returncode == 6
    line = one_error_line(result)
    assert "still running" in line
    assert "after 0.5 s" in line


@pytest.mark.agent
def test_exec_of_a_missing_program_is_127_as_in_a_shell(sock: Path) -> None:
    result = qga("--socket", sock, "exec", "--", "/nonexistent/program")
    assert result.returncode == 127
    assert result.stderr == b"/nonexistent/program: command not found\n"


@pytest.mark.agent
def test_cp_round_trip(sock: Path, tmp_path: Path) -> None:
    data = secrets.token_bytes(5 << 20)  # more than one chunk each way
    local = tmp_path / "local.bin"
    local.write_bytes(data)
    guest = tmp_path / "guest dir"
    guest.mkdir()
    up = qga("--socket", sock, "cp", local, f":{guest}/")
    assert up.returncode == 0, up.stderr
    assert (up.stdout, up.stderr) == (b"", b"")  # no progress bar off a terminal
    assert (guest / "local.bin").read_bytes() == data
    back = tmp_path / "back"
    back.mkdir()
    down = qga("--socket", sock, "cp", f":{guest}/local.bin", back, "--json")
    assert down.returncode == 0, down.stderr
    assert json.loads(down.stdout) == {
        "source": f"{guest}/local.bin",
        "destination": str(back / "local.bin"),
        "bytes": len(data),
        "download": True,
    }
    assert (back / "local.bin").read_bytes() == data


@pytest.mark.agent
def test_cp_errors(sock: Path, tmp_path: Path) -> None:
    missing = qga("--socket", sock, "cp", f":{tmp_path}/nope", tmp_path / "x")
    assert missing.returncode == 3
    assert "nope" in one_error_line(missing)
    assert not (tmp_path / "x").exists()
    local = qga("--socket", sock, "cp", tmp_path / "absent", f":{tmp_path}/y")
    assert local.returncode == 1
    assert "absent" in one_error_line(local)
    other = qga("--socket", sock, "cp", "web1:/etc/hosts", tmp_path / "z")
    assert other.returncode == 2
    assert "web1" in one_error_line(other)


@pytest.mark.agent
def test_call_runs_any_command_raw(sock: Path) -> None:
    assert qga("--socket", sock, "call", "guest-sync", '{"id": 7}').stdout == b"7\n"
    host = json.loads(qga("--socket", sock, "call", "guest-get-host-name", "--json").stdout)
    assert host == {"host-name": socket.gethostname()}  # the raw reply, wire names
    piped = qga("--socket", sock, "call", "guest-sync", "-", stdin=b'{"id": 8}')
    assert piped.stdout == b"8\n"
    assert qga("--socket", sock, "call", "guest-sync", "[1]").returncode == 2
    unknown = qga("--socket", sock, "call", "guest-no-such-thing")
    assert unknown.returncode == 4
    assert "guest-no-such-thing is unknown to the agent" in one_error_line(unknown)
    typo = qga("--socket", sock, "call", "guest-get-osifno")
    assert typo.returncode == 4
    assert "did you mean guest-get-osinfo?" in one_error_line(typo)


@pytest.mark.agent
def test_refused_commands_exit_4_and_run_nothing(sock: Path, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    for args in (
        ("set-time",),
        ("reboot",),
        ("fsfreeze-freeze",),
        ("freeze", "--", "touch", marker),
    ):
        result = qga("--socket", sock, *args)
        assert result.returncode == 4, args
        assert "disabled" in one_error_line(result)
    assert not marker.exists()  # freeze failed before running the host command


@pytest.mark.agent
def test_passwd_reads_stdin(sock: Path) -> None:
    result = qga("--socket", sock, "passwd", "root", stdin=b"s3cret-pw\n")
    assert result.returncode == 4  # blocked on the host agent: but read and sent
    assert "set-user-password" in one_error_line(result)
    assert b"s3cret" not in result.stderr + result.stdout
    empty = qga("--socket", sock, "passwd", "root")
    assert empty.returncode == 2
    assert "no password given" in one_error_line(empty)


@pytest.mark.agent
def test_ssh_keys(sock: Path, throwaway_user: pwd.struct_passwd) -> None:  # noqa: F811
    name = throwaway_user.pw_name
    one, two = ssh_key("one"), ssh_key("two")
    assert qga("--socket", sock, "ssh-keys", "add", name, one).returncode == 0
    assert (
        qga("--socket", sock, "ssh-keys", "add", name, stdin=f"# c\n{two}\n".encode()).returncode
        == 0
    )
    listed = qga("--socket", sock, "ssh-keys", "list", name)
    assert listed.returncode == 0, listed.stderr
    assert sorted(listed.stdout.decode().splitlines()) == sorted([one, two])
    assert qga("--socket", sock, "ssh-keys", "remove", name, one).returncode == 0
    assert json.loads(qga("--socket", sock, "ssh-keys", "list", name, "--json").stdout) == [two]
    assert qga("--socket", sock, "ssh-keys", "remove", name).returncode == 2  # no keys given


@pytest.mark.agent
def test_unreachable_socket_exits_5(tmp_path: Path) -> None:
    result = qga("--socket", tmp_path / "nothing", "ping")
    assert result.returncode == 5
    assert str(tmp_path / "nothing") in one_error_line(result)
    as_json = qga("--json", "--socket", tmp_path / "nothing", "ping")
    error = json.loads(as_json.stdout)["error"]
    assert (error["type"], error["exit_code"], error["code"]) == ("AgentUnreachableError", 5, 1000)
    debug = qga("--debug", "--socket", tmp_path / "nothing", "ping")
    assert debug.returncode == 5
    assert b"Traceback" in debug.stderr


@pytest.mark.agent
def test_wait(sock: Path, tmp_path: Path) -> None:
    assert qga("--socket", sock, "wait").returncode == 0
    gone = qga("--socket", tmp_path / "later", "wait", "--timeout", "1")
    assert gone.returncode == 6
    assert "did not answer within 1 s" in one_error_line(gone)


@pytest.mark.agent
def test_fleet_gives_one_line_per_target(sock: Path, tmp_path: Path) -> None:
    missing = tmp_path / "missing.sock"
    result = qga("fleet", sock, missing, "--", "get-host-name")
    assert result.returncode == 8
    lines = result.stdout.decode().splitlines()
    assert len(lines) == 2
    assert lines[0].split() == [str(sock), "ok", socket.gethostname()]
    assert lines[1].split()[:2] == [str(missing), "error"]
    reports = json.loads(
        qga("fleet", "--json", sock, sock, "--", "exec", "--", "/bin/echo", "x").stdout
    )
    assert [r["target"] for r in reports] == [str(sock), str(sock)]
    assert all(r["ok"] and r["exit_code"] == 0 for r in reports)
    assert base64.b64decode(reports[0]["value"]["stdout"]) == b"x\n"
    failing = qga("fleet", sock, "--", "shell", "echo bad; exit 3")
    assert failing.returncode == 8
    assert failing.stdout.decode().split() == [str(sock), "exit", "3", "bad"]


@pytest.mark.agent
def test_output_to_a_closed_pipe_is_quiet(sock: Path) -> None:
    big = "yes | head -c 4000000"
    shell = f"{QGA} --socket {sock} shell '{big}' | head -c 4; echo \" $?\""
    result = subprocess.run(["bash", "-c", shell], capture_output=True, timeout=60, check=False)
    assert result.stdout == b"y\ny\n 0\n"
    assert result.stderr == b""


def test_helpers_do_not_shadow_unrelated_commands() -> None:
    declared = {subcommand_name(cmd): cmd for cmd in all_commands()}
    for helper in HELPERS:
        if helper.name in declared:  # it takes that command's place: it must run it
            assert declared[helper.name] in helper.runs, helper.name
