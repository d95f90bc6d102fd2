"""``qga``: the command line, its dispatch, and the one place errors become exit codes.

Forms::

    qga [-c URI] [--backend B] DOMAIN COMMAND [ARGS]     a libvirt domain's agent
    qga [-c URI] -d DOMAIN COMMAND [ARGS]                the same, for any domain name
    qga --socket PATH COMMAND [ARGS]                     an agent on a unix socket
    qga [-c URI] list | cp SRC DST | fleet TARGET... -- COMMAND | completion SHELL

The words before the command are read first (target options, then the target); the
command's own parser takes the rest, with ``--json``, ``--debug`` and ``--timeout``
accepted after it too. Only the parser of the command given is built: startup stays
quick however many commands there are.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from ..errors import GuestAgentError
from ..quiet import quiet_libvirt_errors
from ..transports.domain import BACKENDS
from . import exits
from .completion import SHELLS, Words, render
from .core import Context, GlobalOptions, Outcome, Runner, Subcommand
from .inputs import UsageError
from .messages import error_text
from .output import Output, table

if TYPE_CHECKING:
    from ..client import GuestAgent
    from ..discovery import AgentChannel, DomainInfo
    from ..fleet import FleetTarget

__all__ = [
    "HOST_COMMANDS",
    "HostCommand",
    "agent_subcommands",
    "completion_words",
    "helpers",
    "host_parser",
    "main",
    "subcommand_parser",
    "synopsis",
    "top_parser",
]

PROG: Final = "qga"
DEFAULT_WAIT: Final = 60.0


class _Parser(argparse.ArgumentParser):
    """argparse, with usage errors raised (one line, exit 2) rather than printed."""

    def error(self, message: str) -> Any:
        raise UsageError(f"{message} (see {self.prog} --help)")


def _parser(prog: str, description: str | None = None, **kwargs: Any) -> _Parser:
    return _Parser(
        prog=prog,
        description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
        **kwargs,
    )


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text} is not a number of seconds") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text}: the timeout must be positive")
    return value


def _count(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text} is not a whole number") from None


def _version() -> str:
    from ..metadata import installed_version

    return installed_version() or "(not installed)"


class _VersionAction(argparse.Action):
    """``--version``, read when asked: importlib.metadata costs more than the rest of a
    ping's start-up."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(
            option_strings,
            argparse.SUPPRESS,
            nargs=0,
            default=argparse.SUPPRESS,
            help="show program's version number and exit",
        )

    def __call__(self, parser: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> None:
        print(f"{parser.prog} {_version()}")
        parser.exit()


def _output_options(parser: argparse.ArgumentParser, *, after: bool) -> None:
    """--json, --debug, --timeout: before the command, or (``after``) among its arguments."""
    default = argparse.SUPPRESS if after else None
    parser.add_argument(
        "-j",
        "--json",
        action="store_true",
        default=default or False,
        help="print JSON for scripts (see docs/cli.md)",
    )
    parser.add_argument(
        "--debug",
        action="store_true",
        default=default or False,
        help="show tracebacks on errors and the library's debug logs, wire trace included",
    )
    parser.add_argument(
        "--trace",
        action="store_true",
        default=default or False,
        help="show every request and reply on stderr, secrets hidden (also QGA_TRACE=1)",
    )
    parser.add_argument(
        "--timeout",
        type=_seconds,
        metavar="SECONDS",
        default=default,
        help="seconds to wait for each reply of the agent (default 5); exec, shell: how "
        "long the process may run (default: as long as it takes); wait: how long to "
        f"wait in all (default {DEFAULT_WAIT:g})",
    )


@functools.cache
def _output_parent() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    _output_options(parent, after=True)
    return parent


def top_parser() -> argparse.ArgumentParser:
    """The parser of the words before the command (and of ``qga --help``)."""
    parser = _parser(
        PROG,
        "Talk to the QEMU guest agent of a libvirt domain, or of any agent socket.",
        usage=(
            "qga [-c URI] [--backend B] DOMAIN COMMAND [ARGS]\n"
            "       qga --socket PATH COMMAND [ARGS]\n"
            "       qga [-c URI] list | cp SRC DST | fleet TARGET... -- COMMAND\n"
            "       qga completion bash|zsh"
        ),
        add_help=False,
    )
    parser.add_argument("-h", "--help", action="store_true", help="show this help")
    parser.add_argument("--version", action=_VersionAction)
    parser.add_argument(
        "-c",
        "--connect",
        metavar="URI",
        action="append",
        help="libvirt URI (default: $LIBVIRT_DEFAULT_URI, else qemu:///system); list and "
        "fleet take several, one per hypervisor",
    )
    parser.add_argument(
        "-d", "--domain", metavar="DOMAIN", help="the domain (for a name like a command's)"
    )
    parser.add_argument("--socket", metavar="PATH", help="an agent's unix socket, no libvirt")
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        default="auto",
        help="how to reach a domain's agent: through libvirt, or its raw socket "
        "(auto: the socket only for a channel libvirt does not hold)",
    )
    _output_options(parser, after=False)
    parser.add_argument("words", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    return parser


def subcommand_parser(sub: Subcommand, prog: str) -> argparse.ArgumentParser:
    """The parser of one subcommand's arguments."""
    parser = _parser(prog, sub.help, parents=[_output_parent()])
    sub.arguments(parser)
    parser.usage = f"{prog} {synopsis(parser)}".rstrip()
    return parser


_OUTPUT_OPTIONS: Final = frozenset(
    {"-h", "--help", "-j", "--json", "--debug", "--trace", "--timeout"}
)


def synopsis(parser: argparse.ArgumentParser) -> str:
    """A parser's own arguments in one line, without the options every command has."""
    parts = []
    for action in parser._actions:
        if _OUTPUT_OPTIONS & set(action.option_strings) or action.help == argparse.SUPPRESS:
            continue
        metavar = action.metavar or action.dest.upper()
        if action.choices and not action.metavar:
            metavar = "{" + ",".join(map(str, action.choices)) + "}"
        if isinstance(action, argparse.BooleanOptionalAction):
            text = f"--[no-]{action.option_strings[0].removeprefix('--')}"
        elif action.option_strings:
            flag = max(action.option_strings, key=len)
            text = flag if action.nargs == 0 else f"{flag} {metavar}"
            text += "..." if action.nargs in ("+", "*") else ""
        elif action.nargs == "+":
            text = f"{metavar}..."
        elif action.nargs == "*":
            text = f"[{metavar}...]"
        elif action.nargs == "?":
            text = f"[{metavar}]"
        else:
            text = str(metavar)
        optional = action.option_strings and not action.required
        parts.append(f"[{text}]" if optional else text)
    return " ".join(parts)


@functools.cache
def agent_subcommands() -> dict[str, Subcommand]:
    """Every subcommand that talks to an agent: one per declaration, helpers over them."""
    from ..commands import all_commands, user_commands
    from .derive import wire_subcommand

    declared = [*all_commands(), *user_commands()]
    found = {sub.name: sub for sub in map(wire_subcommand, declared)}
    found.update((helper.name, helper) for helper in helpers())
    return found


def helpers() -> tuple[Subcommand, ...]:
    """Every helper, in the order of ``qga --help``: those over agents, then watch."""
    from .helpers import HELPERS

    return (*HELPERS, _WATCH)


ALIASES: Final[dict[str, str]] = {
    "hostname": "get-host-name",
    "network": "ifaddr",
    "cpustats": "get-cpustats",
    "timezone": "get-timezone",
    "vcpus": "get-vcpus",
    "disks": "get-disks",
}
"""Names people type from other guest-agent tools, and the command each one runs."""


def _lookup(name: str, target: str | None = None) -> Subcommand:
    """The subcommand called ``name`` (or an alias of it).

    Raises:
        UsageError: no such command; the message suggests the likely one (including
            the virsh order, ``qga ping web1``, when ``target`` is a command's name).
    """
    subs = agent_subcommands()
    if name in subs or name in ALIASES:
        return subs[ALIASES.get(name, name)]
    if name.startswith("-"):
        raise UsageError(f"{name} goes before the domain (see qga --help)")
    if name in HOST_COMMANDS:
        raise UsageError(f"{name} takes no domain or socket before it: qga {name} ...")
    if target is not None and (target in subs or target in ALIASES):
        raise UsageError(
            f"unknown command {name}; did you mean `qga {name} {target}`? "
            "(the domain comes first: qga DOMAIN COMMAND)"
        )
    import difflib

    close = difflib.get_close_matches(name, [*subs, *ALIASES, *HOST_COMMANDS], n=3)
    hint = f"; did you mean {' or '.join(close)}?" if close else "; see qga --help"
    raise UsageError(f"unknown command {name}{hint}")


# --- watch ----------------------------------------------------------------------------


def _watch_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--interval",
        type=_seconds,
        default=2.0,
        metavar="SECONDS",
        help="seconds between two runs (default 2)",
    )
    parser.add_argument("--count", type=_count, metavar="N", help="stop after N runs")
    parser.add_argument("words", nargs=argparse.REMAINDER, metavar="COMMAND [ARGS]")


def _read_only(sub: Subcommand) -> bool:
    return bool(sub.runs) and not any(command.facts.changes_guest for command in sub.runs)


def _prepare_watch(ctx: Context, namespace: argparse.Namespace) -> Runner:
    if not namespace.words:
        raise UsageError("watch needs a command: qga DOMAIN watch [--interval N] COMMAND")
    if ctx.out.json_mode:
        raise UsageError("watch is for people: for scripts, run qga ... --json in a loop")
    name, rest = namespace.words[0], namespace.words[1:]
    sub = _lookup(name)
    if sub is _WATCH or not _read_only(sub):
        raise UsageError(f"watch runs only commands that change nothing in the guest, not {name}")
    parser = subcommand_parser(sub, f"{PROG} {_where(ctx.options)} watch {name}")
    inner = sub.prepare(ctx, parser.parse_args(rest))
    title = f"every {namespace.interval:g} s: qga {_where(ctx.options)} {' '.join(namespace.words)}"
    redraw = ctx.out.stdout_is_terminal()

    def run(agent: GuestAgent) -> Outcome:
        rounds = 0
        while True:
            outcome = inner(agent)
            if redraw:
                ctx.out.raw(b"\x1b[H\x1b[2J")  # home, clear: refresh in place
            elif rounds:
                ctx.out.line()
            ctx.out.line(f"{title}  ({time.strftime('%H:%M:%S')})")
            outcome.show(ctx.out)
            ctx.out.flush()
            rounds += 1
            if namespace.count is not None and rounds >= namespace.count:
                return Outcome(text=(), exit_code=outcome.exit_code)
            time.sleep(namespace.interval)

    return run


_WATCH: Final = Subcommand(
    "watch",
    "Run a read-only command again and again, refreshed in place (Ctrl-C ends).",
    _prepare_watch,
    _watch_arguments,
    description=(
        "Run COMMAND (a helper or agent command that changes nothing in the guest) every "
        "--interval seconds on one connection, redrawn in place on a terminal, until "
        "Ctrl-C or --count runs."
    ),
    in_fleet=False,
)


# --- running --------------------------------------------------------------------------


@dataclass
class _State:
    """What error handling needs to know of a run that may have failed anywhere, kept
    up to date as the run goes: ``--debug`` as it stands, and the target as typed once
    it is settled (for the hints of errors)."""

    debug: bool = False
    where: str | None = None


def _adopt(state: _State, out: Output, options: GlobalOptions) -> GlobalOptions:
    """Make ``options`` the run's: its output mode, its logs, and error handling's view."""
    state.debug = options.debug
    out.json_mode = options.json
    _logs(options)
    return options


def _merge(
    state: _State, out: Output, options: GlobalOptions, given: argparse.Namespace
) -> GlobalOptions:
    """Output options given after the command count too: the options with them."""
    keys = ("json", "debug", "trace", "timeout")
    changes = {key: getattr(given, key) for key in keys if key in vars(given)}
    return _adopt(state, out, dataclasses.replace(options, **changes))


def _logs(options: GlobalOptions) -> None:
    """--debug: the library's debug logs; --trace or QGA_TRACE=1: the wire trace only."""
    trace = options.trace or os.environ.get("QGA_TRACE", "") not in ("", "0")
    if not (options.debug or trace):
        return
    import logging

    from ..wire import LOGGER_NAME

    logger = logging.getLogger("qga_libvirt" if options.debug else LOGGER_NAME)
    logger.setLevel(logging.DEBUG)
    if not any(getattr(h, "qga_cli", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("qga: %(name)s: %(message)s"))
        handler.qga_cli = True  # type: ignore[attr-defined]
        logger.addHandler(handler)


def _leading_options(
    state: _State, out: Output, options: GlobalOptions, words: list[str]
) -> tuple[GlobalOptions, list[str]]:
    """--json, -j, --debug, --timeout typed between the target and the command count too:
    the options with them, and the words after them."""
    cut = 0
    while cut < len(words) and words[cut] in _OUTPUT_OPTIONS - {"-h", "--help"}:
        cut += 2 if words[cut] == "--timeout" else 1
    if cut:
        given, unknown = _output_parent().parse_known_args(words[:cut])
        if unknown:
            raise UsageError(f"--timeout needs SECONDS (see {PROG} --help)")
        options = _merge(state, out, options, given)
    return options, words[cut:]


def _open_agent(options: GlobalOptions) -> GuestAgent:
    from ..client import DEFAULT_TIMEOUT, GuestAgent

    timeout = options.timeout or DEFAULT_TIMEOUT
    if options.socket is not None:
        if options.backend == "libvirt":
            raise UsageError("--socket talks to the socket itself: it takes no --backend libvirt")
        return GuestAgent.from_socket(options.socket, timeout)
    assert options.domain is not None, "a target is a socket or a domain"
    return GuestAgent.from_domain(options.domain, options.connect, timeout, backend=options.backend)


def _run(
    out: Output, options: GlobalOptions, sub: Subcommand, namespace: argparse.Namespace
) -> int:
    ctx = Context(out, options)
    runner = sub.prepare(ctx, namespace)
    with _open_agent(options) as agent:
        outcome = runner(agent)
    outcome.show(out)
    return outcome.exit_code


def _where(options: GlobalOptions) -> str:
    """The target as typed: ``--socket PATH`` or the domain."""
    return f"--socket {options.socket}" if options.socket else str(options.domain)


def _agent_command(state: _State, out: Output, options: GlobalOptions, words: list[str]) -> int:
    options, words = _leading_options(state, out, options, words)
    if not words:
        raise UsageError(f"no command given for {_where(options)} (see qga --help)")
    name, rest = words[0], words[1:]
    if name in ("-h", "--help", "help"):
        return _help(out, rest[0] if rest and name == "help" else None)
    sub = _lookup(name, options.domain)
    namespace = subcommand_parser(sub, f"{PROG} {_where(options)} {name}").parse_args(rest)
    options = _merge(state, out, options, namespace)
    return _run(out, options, sub, namespace)


# --- host commands --------------------------------------------------------------------


@dataclass(frozen=True)
class HostCommand:
    """A command that needs no target first (``qga list``, ``qga cp``, ...).

    ``run`` gets the run's state, the output, the global options, its own arguments and
    (``tail`` commands, fleet) the words of the qga command after ``--``.
    """

    name: str
    summary: str
    arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[_State, Output, GlobalOptions, argparse.Namespace, list[str]], int]
    tail: str = ""


def host_parser(command: HostCommand, prog: str = PROG) -> argparse.ArgumentParser:
    """The parser of a host command's arguments."""
    parser = _parser(f"{prog} {command.name}", command.summary, parents=[_output_parent()])
    command.arguments(parser)
    parser.usage = f"{parser.prog} {synopsis(parser)} {command.tail}".rstrip()
    return parser


def _host_command(
    state: _State, out: Output, options: GlobalOptions, command: HostCommand, words: list[str]
) -> int:
    tail: list[str] = []
    if command.tail and "--" in words:
        cut = words.index("--")
        words, tail = words[:cut], words[cut + 1 :]
    namespace = host_parser(command).parse_args(words)
    options = _merge(state, out, options, namespace)
    return command.run(state, out, options, namespace, tail)


_STATE_FLAGS: Final = {
    "running": ("running",),
    "paused": ("paused", "pmsuspended"),
    "shutoff": ("shut off",),
    "other": ("no state", "blocked", "shutting down", "crashed"),
}
"""virsh's --state-X flags, and the states each one selects."""


def _state_arguments(parser: argparse.ArgumentParser, what: str) -> None:
    for flag, states in _STATE_FLAGS.items():
        parser.add_argument(
            f"--state-{flag}",
            dest="states",
            action="append_const",
            const=flag,
            help=f"{what} {' or '.join(states)} (as virsh; repeatable)",
        )


def _list_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--name", action="store_true", help="print only the names")
    parser.add_argument(
        "--all", action="store_true", help="every domain (the default: accepted as virsh's)"
    )
    parser.add_argument("--inactive", action="store_true", help="only the domains not running")
    _state_arguments(parser, "only the domains")


def _selected(
    domains: list[DomainInfo], states: Sequence[str] | None, inactive: bool
) -> list[DomainInfo]:
    """The domains in the states asked for (all when none are)."""
    wanted = {state for flag in states or () for state in _STATE_FLAGS[flag]}
    if wanted:
        domains = [d for d in domains if d.state in wanted]
    if inactive:
        domains = [d for d in domains if not d.running]
    return domains


def _list(
    state: _State, out: Output, options: GlobalOptions, args: argparse.Namespace, _: list[str]
) -> int:
    from ..discovery import list_domains

    several = len(options.connects) > 1
    domains: list[DomainInfo] = []
    failed = False
    uris: Sequence[str | None] = options.connects or (None,)
    for uri in uris:
        try:
            domains += _selected(list_domains(uri), args.states, args.inactive)
        except GuestAgentError as exc:
            if not several:
                raise
            out.error(f"error: {_one_line(_error_text(exc, None))}")
            failed = True
    if out.json_mode:
        out.json(domains)
    elif args.name:
        out.lines(f"{d.uri}/{d.name}" if several else d.name for d in domains)
    else:
        rows = [
            [str(d.id) if d.id is not None else "-", d.name, d.state, _agent_cell(d.agent_channel)]
            + ([d.uri] if several else [])
            for d in domains
        ]
        out.lines(
            table(["Id", "Name", "State", "Agent"] + (["Hypervisor"] if several else []), rows)
        )
        if not rows:
            out.line("(no domains)")
    return exits.PARTIAL if failed else exits.OK


def _agent_cell(channel: AgentChannel | None) -> str:
    """The Agent column of qga list (the MCP server's words for it are its own)."""
    if channel is None:
        return "no channel"
    if not channel.held_by_libvirt:
        return f"socket {channel.socket_path}"
    return channel.state or "-"


def _cp_arguments(parser: argparse.ArgumentParser) -> None:
    agent_subcommands()["cp"].arguments(parser)


def _cp(
    state: _State, out: Output, options: GlobalOptions, args: argparse.Namespace, _: list[str]
) -> int:
    from .helpers import parse_guest_spec

    remote = parse_guest_spec(args.source) or parse_guest_spec(args.destination)
    if remote is None or not remote.domain:
        raise UsageError("qga cp needs DOMAIN:/path on one side (or: qga DOMAIN cp :/path ...)")
    options = dataclasses.replace(options, domain=remote.domain)
    state.where = _where(options)
    return _run(out, options, agent_subcommands()["cp"], args)


def _fleet_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "targets", nargs="*", metavar="TARGET", help="domain names/UUIDs/IDs, or socket paths"
    )
    parser.add_argument(
        "--all",
        action="store_true",
        help="every running domain of the URI that has a guest agent channel",
    )
    _state_arguments(parser, "the domains with an agent channel that are")
    parser.add_argument(
        "--workers", type=_count, default=16, metavar="N", help="targets at once (default 16)"
    )


def _fleet(
    state: _State, out: Output, options: GlobalOptions, args: argparse.Namespace, tail: list[str]
) -> int:
    if not tail:
        raise UsageError("fleet needs -- and a command after the targets (see qga fleet --help)")
    if args.workers < 1:
        raise UsageError("--workers must be at least 1")
    name, rest = tail[0], tail[1:]
    sub = _lookup(name)
    targets: list[FleetTarget] = list(args.targets)
    if len(options.connects) > 1:
        plain = [t for t in args.targets if "://" not in t and "/" not in t]
        if plain:
            raise UsageError(
                f"with several -c, name each domain's hypervisor: URI/{plain[0]} (or give --all)"
            )
    if args.all or args.states:
        targets += _fleet_domains(options, args.states or ["running"])
    if not targets:
        if args.all or args.states:
            out.error("no domain with a guest agent channel is in that state")
            return exits.OK
        raise UsageError("fleet needs targets, or --all (see qga fleet --help)")
    if not sub.in_fleet:
        raise UsageError(f"{name} does not run in a fleet")
    namespace = subcommand_parser(sub, f"{PROG} fleet ... -- {name}").parse_args(rest)
    options = _merge(state, out, options, namespace)

    from ..client import DEFAULT_TIMEOUT
    from ..fleet import fleet_call

    runner = sub.prepare(Context(out, options, in_fleet=True), namespace)
    results = fleet_call(
        targets,
        runner,
        max_workers=args.workers,
        timeout=options.timeout or DEFAULT_TIMEOUT,
        uri=options.connect,
    )
    reports, lines = [], []
    for result in results:
        outcome: Outcome | None = result.value
        if outcome is not None:
            code = outcome.exit_code
            status, detail = ("ok" if code == 0 else f"exit {code}"), outcome.one_line()
        else:
            assert result.error is not None
            code = exits.exit_code_for(result.error)
            status, detail = "error", _one_line(_error_text(result.error, result.target))
        reports.append(
            {
                "target": result.target,
                "ok": result.ok,
                "exit_code": code,
                "value": None if outcome is None else outcome.value,
                "error_type": result.error_type,
                "error_message": result.error_message,
                "duration": result.duration,
            }
        )
        lines.append((result.target, status, detail))
    if out.json_mode:
        out.json(reports)
    else:
        width = max(len(target) for target, _, _ in lines)
        out.lines(f"{t.ljust(width)}  {s.ljust(6)}  {d}".rstrip() for t, s, d in lines)
    return exits.OK if all(r["exit_code"] == 0 for r in reports) else exits.PARTIAL


def _fleet_domains(options: GlobalOptions, states: Sequence[str]) -> list[FleetTarget]:
    """The domains in ``states`` that have a guest agent channel: names, or with several
    -c, (URI, name) pairs."""
    from ..discovery import list_domains

    if len(options.connects) <= 1:
        domains = _selected(list_domains(options.connect), states, inactive=False)
        return [d.name for d in domains if d.agent_channel is not None]
    targets: list[FleetTarget] = []
    for uri in options.connects:
        domains = _selected(list_domains(uri), states, inactive=False)
        targets += [(uri, d.name) for d in domains if d.agent_channel is not None]
    return targets


def _completion_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("shell", choices=SHELLS)


def _completion(
    state: _State, out: Output, options: GlobalOptions, args: argparse.Namespace, _: list[str]
) -> int:
    out.raw(render(args.shell, completion_words()).encode())
    return exits.OK


def _option_strings(parser: argparse.ArgumentParser) -> list[str]:
    return sorted({option for action in parser._actions for option in action.option_strings})


def completion_words() -> Words:
    """What the completion scripts complete, from the parsers themselves."""
    subs = {**agent_subcommands(), **{a: agent_subcommands()[n] for a, n in ALIASES.items()}}
    return Words(
        global_options=_option_strings(top_parser()),
        host_commands=[(command.name, command.summary) for command in HOST_COMMANDS.values()],
        agent_commands=[(name, sub.summary) for name, sub in subs.items()],
        flags={name: _option_strings(subcommand_parser(sub, name)) for name, sub in subs.items()},
    )


def _help_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("command", nargs="?", metavar="COMMAND")


def _help_command(
    state: _State, out: Output, options: GlobalOptions, args: argparse.Namespace, _: list[str]
) -> int:
    return _help(out, args.command)


def _help(out: Output, name: str | None) -> int:
    if name is None:
        parser = top_parser()
        parser.epilog = _epilog()  # only now: it lists every command
        text = parser.format_help()
    elif name in HOST_COMMANDS:
        text = host_parser(HOST_COMMANDS[name]).format_help()
    else:
        text = subcommand_parser(_lookup(name), f"{PROG} DOMAIN {name}").format_help()
    out.raw(text.encode())
    return exits.OK


HOST_COMMANDS: Final[dict[str, HostCommand]] = {
    command.name: command
    for command in (
        HostCommand(
            "list", "Every domain, its state and its agent channel's state.", _list_arguments, _list
        ),
        HostCommand(
            "cp",
            "Copy a file: qga cp DOMAIN:/path LOCAL, or LOCAL DOMAIN:/path.",
            _cp_arguments,
            _cp,
        ),
        HostCommand(
            "fleet",
            "One command across many agents, one result line each.",
            _fleet_arguments,
            _fleet,
            tail="-- COMMAND [ARGS]",
        ),
        HostCommand(
            "completion",
            "Print the bash or zsh completion script.",
            _completion_arguments,
            _completion,
        ),
        HostCommand("help", "Help on qga, or on one command.", _help_arguments, _help_command),
    )
}


def _epilog() -> str:
    def rows(pairs: Sequence[tuple[str, str]]) -> list[str]:
        width = max(len(name) for name, _ in pairs)
        return [f"  {name.ljust(width)}  {text}" for name, text in pairs]

    subs = agent_subcommands()
    helper_names = {helper.name for helper in helpers()}
    lines = ["commands of the host:"]
    lines += rows([(c.name, c.summary) for c in HOST_COMMANDS.values()])
    lines += ["", "helpers (after DOMAIN or --socket PATH):"]
    lines += rows([(h.name, h.summary) for h in helpers()])
    lines += ["", "agent commands, one per QGA command (qga DOMAIN COMMAND --help):"]
    lines += rows([(n, s.summary) for n, s in subs.items() if n not in helper_names])
    lines += ["", "aliases (names other guest-agent tools use):"]
    lines += rows([(alias, f"= {name}") for alias, name in ALIASES.items()])
    lines += ["", "exit codes:"]
    lines += rows(exits.EXIT_CODES)
    return "\n".join(lines)


# --- errors ---------------------------------------------------------------------------


def _one_line(text: str) -> str:
    return " ".join(part.strip() for part in text.splitlines() if part.strip())


def _error_text(error: BaseException, target: str | None) -> str:
    return error_text(error, target or "DOMAIN")


def _fail(out: Output, error: BaseException, state: _State) -> int:
    where = state.where
    if isinstance(error, UsageError):
        code, message = exits.USAGE, f"error: {error}"
    elif isinstance(error, KeyboardInterrupt):
        code, message = exits.INTERRUPTED, "interrupted"
    elif isinstance(error, GuestAgentError):
        code, message = exits.exit_code_for(error), f"error: {_error_text(error, where)}"
    elif isinstance(error, OSError):
        code, message = exits.FAILURE, f"error: {_error_text(error, where)}"
    else:
        code = exits.FAILURE
        message = (
            f"internal error: {type(error).__name__}: {error} "
            "(run with --debug for the traceback, and please report it)"
        )
    if state.debug:
        import traceback

        traceback.print_exception(error, file=sys.stderr)
    if out.json_mode:
        report: dict[str, Any] = {
            "type": type(error).__name__,
            "message": _one_line(_error_text(error, where)),
            "exit_code": code,
        }
        if isinstance(error, GuestAgentError):
            report.update(code=error.code, target=error.target, command=error.command)
        out.json({"error": report})
    out.error(message)
    return code


def _main(args: list[str], out: Output, state: _State) -> int:
    parsed = top_parser().parse_args(args)  # --version exits here, having imported little
    from ..commands import load_user_commands

    try:  # $QGA_COMMANDS: users' own declared commands become subcommands
        load_user_commands()
    except ImportError as exc:
        raise UsageError(str(exc)) from None
    options = _adopt(state, out, GlobalOptions.from_namespace(parsed))
    words: list[str] = list(parsed.words)
    if len(options.connects) > 1 and not (
        options.socket is None and options.domain is None and words[:1] in (["list"], ["fleet"])
    ):
        raise UsageError("-c once for a domain's command; list and fleet take several")
    if parsed.help:
        return _help(out, None)
    if options.socket is not None and options.domain is not None:
        raise UsageError("give --socket or a domain, not both")
    if options.socket is None and options.domain is None:
        if not words:
            raise UsageError("no command given (see qga --help)")
        if words[0] in HOST_COMMANDS:
            return _host_command(state, out, options, HOST_COMMANDS[words[0]], words[1:])
        if words[0].startswith("-"):
            raise UsageError(f"unknown option {words[0]} (see qga --help)")
        options = dataclasses.replace(options, domain=words.pop(0))
    state.where = _where(options)
    if not words and options.domain in agent_subcommands().keys() | ALIASES.keys():
        raise UsageError(f"{options.domain} needs a domain first: qga DOMAIN {options.domain}")
    return _agent_command(state, out, options, words)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``qga`` with ``argv`` (default: the process's); returns the exit status."""
    out = Output(json_mode=False)
    state = _State()
    quiet_libvirt_errors()  # qga owns its process: errors are its one line on stderr
    try:
        code = _main(list(sys.argv[1:] if argv is None else argv), out, state)
        out.flush()
    except SystemExit as exc:  # --help and --version print and exit through argparse
        return exc.code if isinstance(exc.code, int) else exits.USAGE
    except BrokenPipeError:
        # The reader went away (qga list | head -1): nothing more can be said to it.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return exits.FAILURE
    except (Exception, KeyboardInterrupt) as exc:
        return _fail(out, exc, state)
    return code
