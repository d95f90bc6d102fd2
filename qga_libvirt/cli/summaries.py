"""Helpers that put several agent answers together for people: ``time``, ``guestinfo``,
and ``exec-status`` (the output of a process started with ``exec --no-wait``)."""

from __future__ import annotations

import argparse
import datetime
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final

from ..commands import Command, Commands
from ..errors import AgentCommandError
from . import exits
from .core import Context, Outcome, Runner, Subcommand
from .inputs import UsageError
from .output import human_size, table

if TYPE_CHECKING:
    from ..client import GuestAgent
    from ..models import ExecStatus, FilesystemInfo, NetworkInterface, Timezone, User

__all__ = ["SUMMARIES"]


# --- exec-status ----------------------------------------------------------------------


def _exec_status_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("pid", type=_pid, metavar="PID", help="as exec --no-wait printed it")


def _pid(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text} is not a process id") from None


def exec_status_outcome(status: ExecStatus) -> Outcome:
    """A process's status as ``exec`` shows a finished one: its output as it is, its exit
    status as qga's; ``running`` while it runs."""
    if not status.exited:
        return Outcome(status, text=["running"], summary="running")
    code = exits.exit_code_of_process(status.exitcode, status.signal)
    cut = [
        f"warning: the process's {stream} was cut by the agent"
        for stream, truncated in (
            ("stdout", status.out_truncated),
            ("stderr", status.err_truncated),
        )
        if truncated
    ]
    out = status.out_data or b""
    return Outcome(
        status,
        text=(),
        stdout=out,
        stderr=status.err_data or b"",
        summary=f"exited {code}",
        messages=tuple(cut),
        exit_code=code,
    )


def _prepare_exec_status(ctx: Context, namespace: argparse.Namespace) -> Runner:
    def run(agent: GuestAgent) -> Outcome:
        return exec_status_outcome(agent.exec_status(namespace.pid))

    return run


# --- time -----------------------------------------------------------------------------


def _time_arguments(parser: argparse.ArgumentParser) -> None:
    change = parser.add_mutually_exclusive_group()
    change.add_argument(
        "--sync",
        action="store_true",
        help="set the guest's clock (and its RTC) from the host's clock",
    )
    change.add_argument(
        "--set",
        metavar="TIME",
        dest="set_to",
        help="set the guest's clock (and its RTC) to TIME, an ISO 8601 time such as "
        "2026-12-01T12:00:00Z or 2026-12-01 13:00:00+01:00 (without an offset: UTC)",
    )


def parse_time(text: str) -> datetime.datetime:
    """An ISO 8601 time (``Z`` or an offset; none means UTC), as an aware datetime.

    Raises:
        UsageError: not an ISO time.
    """
    try:
        value = datetime.datetime.fromisoformat(text.strip())
    except ValueError:
        raise UsageError(f"--set {text}: not an ISO time (e.g. 2026-12-01T12:00:00Z)") from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=datetime.UTC)
    return value


def _ns(moment: datetime.datetime) -> int:
    delta = moment - datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
    return (delta.days * 86400 + delta.seconds) * 10**9 + delta.microseconds * 1000


def _moment(ns: int, zone: datetime.tzinfo = datetime.UTC) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(ns / 1e9, zone)


def _guest_zone(agent: GuestAgent) -> tuple[Timezone | None, datetime.tzinfo]:
    """The guest's timezone (None when its agent cannot say), and as a tzinfo."""
    if not agent.supports(Commands.get_timezone):
        return None, datetime.UTC
    zone = agent.get_timezone()
    offset = datetime.timedelta(seconds=zone.offset)
    tzinfo = datetime.timezone(offset, zone.zone) if zone.zone else datetime.timezone(offset)
    return zone, tzinfo


def _clock(agent: GuestAgent) -> dict[str, Any]:
    """The guest's clock, read once, against the host's at the middle of the round trip."""
    zone, tzinfo = _guest_zone(agent)
    before = time.time_ns()
    guest = agent.get_time()
    host = (before + time.time_ns()) // 2
    return {
        "utc": _moment(guest).isoformat(),
        "local": _moment(guest, tzinfo).isoformat(),
        "timezone": zone,
        "host_utc": _moment(host).isoformat(),
        "offset_seconds": round((guest - host) / 1e9, 6),
        "guest_ns": guest,
    }


def _clock_text(clock: dict[str, Any]) -> list[str]:
    zone: Timezone | None = clock["timezone"]
    offset = clock["offset_seconds"]
    if abs(offset) < 0.001:
        drift = "in step with the host (within 1 ms)"
    else:
        drift = f"{abs(offset):.3f} s {'ahead of' if offset > 0 else 'behind'} the host"
    zone_name = f" ({zone.zone})" if zone is not None and zone.zone else ""
    return [
        f"local: {_readable(clock['local'])}{zone_name}",
        f"UTC:   {_readable(clock['utc'])}",
        f"clock: {drift}",
    ]


def _readable(iso: str) -> str:
    return datetime.datetime.fromisoformat(iso).isoformat(" ", "milliseconds")


def _prepare_time(ctx: Context, namespace: argparse.Namespace) -> Runner:
    target = None if namespace.set_to is None else parse_time(namespace.set_to)

    def show(agent: GuestAgent) -> Outcome:
        clock = _clock(agent)
        return Outcome(clock, text=_clock_text(clock), summary=_clock_text(clock)[2])

    def set_clock(agent: GuestAgent) -> Outcome:
        # the host's clock is read when the request goes, not when qga started
        agent.set_time(_ns(target) if target is not None else time.time_ns())
        how = "from the host's clock" if target is None else f"to {namespace.set_to}"
        clock = _clock(agent)
        return Outcome(
            clock,
            text=_clock_text(clock),
            summary=f"set {how}",
            done=f"the guest's clock was set {how}",
        )

    return set_clock if namespace.sync or target is not None else show


# --- guestinfo ------------------------------------------------------------------------

Section = tuple[str, Command[Any, Any], str]
"""(key, the command it runs, its --flag's help)."""

SECTIONS: Final[tuple[Section, ...]] = (
    ("os", Commands.get_osinfo, "the operating system"),
    ("hostname", Commands.get_host_name, "the host name"),
    ("timezone", Commands.get_timezone, "the timezone"),
    ("users", Commands.get_users, "the users logged in"),
    ("filesystems", Commands.get_fsinfo, "the filesystems and their usage"),
    ("interfaces", Commands.network_get_interfaces, "the network interfaces"),
)


def _guestinfo_arguments(parser: argparse.ArgumentParser) -> None:
    for key, _, text in SECTIONS:
        parser.add_argument(
            f"--{key}", dest="sections", action="append_const", const=key, help=f"show {text}"
        )


def _prepare_guestinfo(ctx: Context, namespace: argparse.Namespace) -> Runner:
    wanted = set(namespace.sections or [key for key, _, _ in SECTIONS])

    def run(agent: GuestAgent) -> Outcome:
        capabilities = agent.capabilities()  # one call: skip what the agent lacks
        value: dict[str, Any] = {"agent": {"version": capabilities.version}}
        missing: dict[str, str] = {}
        for key, command, _ in SECTIONS:
            if key not in wanted:
                continue
            known = capabilities.command(command.wire)
            if known is None or not known.enabled:
                why = "disabled in the agent" if known else "unknown to this agent"
                missing[key] = f"{command.wire} is {why}"
                continue
            try:
                value[key] = command.__get__(agent, type(agent))()
            except AgentCommandError as exc:
                missing[key] = exc.desc
        if missing:
            value["unavailable"] = missing
        return Outcome(value, text=_guestinfo_text(value), summary=_guestinfo_summary(value))

    return run


def _guestinfo_summary(value: dict[str, Any]) -> str:
    os_info = value.get("os")
    name = (os_info.pretty_name or os_info.name or "-") if os_info is not None else "-"
    return f"{value.get('hostname', '-')}: {name}, agent {value['agent']['version']}"


def _guestinfo_text(value: dict[str, Any]) -> list[str]:
    lines = [f"Agent version: {value['agent']['version']}"]
    if (os_info := value.get("os")) is not None:
        name = os_info.pretty_name or os_info.name or "-"
        kernel = " ".join(filter(None, [os_info.kernel_release, os_info.machine]))
        lines.append(f"OS:            {name}" + (f" (kernel {kernel})" if kernel else ""))
    if "hostname" in value:
        lines.append(f"Hostname:      {value['hostname']}")
    if (zone := value.get("timezone")) is not None:
        sign = "+" if zone.offset >= 0 else "-"
        hours, rest = divmod(abs(zone.offset), 3600)
        lines.append(f"Timezone:      {zone.zone or '-'} (UTC{sign}{hours:02d}:{rest // 60:02d})")
    if "users" in value:
        users: list[User] = value["users"]
        names = ", ".join(u.user + (f"@{u.domain}" if u.domain else "") for u in users)
        lines.append(f"Users:         {names or 'nobody logged in'}")
    if "filesystems" in value:
        lines += ["", "Filesystems:", *_indent(fsinfo_text(value["filesystems"]))]
    if "interfaces" in value:
        lines += ["", "Interfaces:", *_indent(ifaddr_text(value["interfaces"]))]
    for key, why in value.get("unavailable", {}).items():
        lines.append(f"({key}: not available: {why})")
    return lines


def _indent(lines: Sequence[str]) -> list[str]:
    return ["  " + line for line in lines]


def ifaddr_text(interfaces: list[NetworkInterface]) -> list[str]:
    """Interfaces as a table, one row per address."""
    if not interfaces:
        return ["no network interfaces reported by the agent"]
    rows = []
    for iface in interfaces:
        first = [iface.name, iface.hardware_address or "-"]
        for address in iface.ip_addresses or []:
            protocol = str(address.ip_address_type.value)
            rows.append([*first, protocol, f"{address.ip_address}/{address.prefix}"])
            first = ["-", "-"]
        if first[0] != "-":
            rows.append([*first, "-", "-"])
    return table(["Name", "MAC address", "Protocol", "Address"], rows)


def fsinfo_text(filesystems: list[FilesystemInfo]) -> list[str]:
    """Filesystems as a table, with their usage."""
    if not filesystems:
        return ["no filesystems reported by the agent"]
    rows = []
    for fs in filesystems:
        total, used = fs.total_bytes, fs.used_bytes
        share = f"{100 * used / total:.0f}%" if total and used is not None else "-"
        rows.append([fs.mountpoint, fs.type, fs.name, human_size(total), human_size(used), share])
    return table(["Mountpoint", "Type", "Device", "Size", "Used", "Use%"], rows)


def users_text(users: list[User]) -> list[str]:
    """Logged-in users as a table."""
    if not users:
        return ["nobody is logged in"]
    rows = [
        [
            u.user,
            u.domain or "-",
            datetime.datetime.fromtimestamp(u.login_time).isoformat(" ", "seconds"),
        ]
        for u in users
    ]
    return table(["User", "Domain", "Login time"], rows)


SUMMARIES: Final[tuple[Subcommand, ...]] = (
    Subcommand(
        "guestinfo",
        "A summary of the guest: OS, host name, timezone, users, filesystems, interfaces.",
        _prepare_guestinfo,
        _guestinfo_arguments,
        runs=(Commands.info, *(command for _, command, _ in SECTIONS)),
        description=(
            "A summary of the guest, as virsh guestinfo gives: the agent's version, the "
            "operating system, host name, timezone, users logged in, filesystems with "
            "their usage and network interfaces (all of them, or those flagged). One "
            "call asks the agent what it has; what it lacks is skipped and said so."
        ),
    ),
    Subcommand(
        "time",
        "The guest's clock (local and UTC) and its offset from the host's; --sync, --set.",
        _prepare_time,
        _time_arguments,
        runs=(Commands.get_time, Commands.get_timezone, Commands.set_time),
        description=(
            "Show the guest's clock in its local time and in UTC, and how far it is "
            "from the host's clock. --sync sets it from the host's clock, --set to a "
            "given time; either way the agent then sets the guest's RTC from it."
        ),
    ),
    Subcommand(
        "exec-status",
        "The status of a process started with exec --no-wait: its output, its exit status.",
        _prepare_exec_status,
        _exec_status_arguments,
        runs=(Commands.exec_status,),
        description=(
            "Ask once about a process started with exec --no-wait. While it runs, prints "
            "running. Once it has ended, writes its output as exec does and exits with its "
            "exit status (128+N for signal N); the agent then forgets it, so ask once."
        ),
    ),
)
"""The summary helpers, in the order of ``qga --help``."""
