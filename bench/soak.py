"""Soak: mixed calls on both backends while a fault injector breaks everything in turn.

Not part of the test run (it boots two tiny guests and runs for minutes):

    .venv/bin/python -m bench.soak [SECONDS]      # default 150

Targets, each used by two worker threads sharing one GuestAgent (as the library says to):
the host's qemu-ga (socket backend), a tiny guest with a raw QEMU chardev socket
(socket backend) and a tiny guest with a libvirt channel reached through a forwarder in
front of libvirtd (libvirt backend; the forwarder plays libvirtd restarts without
touching the shared daemon, see tests/daemonproxy.py).

Faults, each target's in turn (an injector per target): the agent killed in a guest (its
init respawns it), the agent stopped (SIGSTOP) for 4 s, the host agent restarted,
libvirtd restarted (down ~1 s), a guest reset (reboot). After each, the injector measures
how long until the target answers again.

Printed: calls made, faults injected, wrong replies (must be 0: a value that is not the
answer to what was asked), untyped errors (must be 0: anything not a GuestAgentError),
calls past their timeout by more than 10% (must be 0 except within libvirt's documented
bound of its own 5 s sync), and the recovery time per fault.
"""

from __future__ import annotations

import base64
import collections
import os
import random
import sys
import threading
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import libvirt

from qga_libvirt import GuestAgent, GuestAgentError
from qga_libvirt.testing import HostAgent
from qga_libvirt.transports.libvirt import LIBVIRT_SYNC_SECONDS
from scripts import tinyguest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.daemonproxy import DaemonProxy

TIMEOUT = 3.0
LOCAL_URI = "qemu:///system"


@dataclass
class Target:
    name: str
    backend: str  # "socket" or "libvirt"
    agent: GuestAgent
    hostname: str
    faults: list[str]


@dataclass
class Tally:
    lock: threading.Lock = field(default_factory=threading.Lock)
    calls: collections.Counter[str] = field(default_factory=collections.Counter)
    typed: collections.Counter[str] = field(default_factory=collections.Counter)
    wrong: list[str] = field(default_factory=list)
    untyped: list[str] = field(default_factory=list)
    late: list[str] = field(default_factory=list)
    late_within_libvirt_bound: int = 0
    recovery: dict[str, list[float]] = field(default_factory=lambda: collections.defaultdict(list))
    faults: collections.Counter[str] = field(default_factory=collections.Counter)


def timed(tally: Tally, target: Target, what: str, call: Callable[[], Any]) -> Any:
    """One call: counted, timed against TIMEOUT, its error classified. After an error
    the worker pauses a little, as a real client would, rather than spin."""
    started = time.monotonic()
    try:
        return call()
    except GuestAgentError as exc:
        with tally.lock:
            tally.typed[f"{target.backend}:{type(exc).__name__}"] += 1
        time.sleep(0.1)
        return None
    except Exception as exc:  # exactly what the soak is looking for
        with tally.lock:
            tally.untyped.append(f"{target.name} {what}: {exc!r}\n{traceback.format_exc()}")
        return None
    finally:
        took = time.monotonic() - started
        with tally.lock:
            tally.calls[target.backend] += 1
            if took > TIMEOUT * 1.1:
                bound = max(TIMEOUT, LIBVIRT_SYNC_SECONDS) * 1.1 + 0.5
                if target.backend == "libvirt" and took <= bound:
                    tally.late_within_libvirt_bound += 1
                else:
                    tally.late.append(f"{target.name} {what}: {took:.2f} s")


def worker(target: Target, tally: Tally, stop: threading.Event, seed: int) -> None:
    rng = random.Random(seed)
    agent = target.agent
    while not stop.is_set():
        kind = rng.choice(["sync", "hostname", "exec", "ping", "osinfo"])
        if kind == "sync":
            ident = rng.randrange(1, 1 << 30)
            got = timed(tally, target, "sync", partial(agent.sync, ident))
            if got is not None and got != ident:
                tally.wrong.append(f"{target.name} sync({ident}) -> {got}")
        elif kind == "hostname":
            got = timed(tally, target, "hostname", agent.get_host_name)
            if got is not None and got != target.hostname:
                tally.wrong.append(f"{target.name} hostname -> {got!r}")
        elif kind == "exec":
            token = f"t{rng.randrange(1 << 40)}"
            started = timed(
                tally,
                target,
                "exec",
                partial(
                    agent.call,
                    "guest-exec",
                    {"path": "/bin/echo", "arg": [token], "capture-output": True},
                ),
            )
            if not started:
                continue
            pid = started["pid"]
            for _ in range(50):
                status = timed(
                    tally,
                    target,
                    "exec-status",
                    partial(agent.call, "guest-exec-status", {"pid": pid}),
                )
                if status is None:
                    break  # the agent restarted: the pid is gone (a typed error)
                if status.get("exited"):
                    out = base64.b64decode(status.get("out-data", "")).decode()
                    if out != token + "\n":
                        tally.wrong.append(f"{target.name} exec echo {token} -> {out!r}")
                    break
                time.sleep(0.05)
        elif kind == "ping":
            timed(tally, target, "ping", agent.ping)
        else:
            timed(tally, target, "osinfo", agent.get_osinfo)


def recover(target: Target, tally: Tally, fault: str, injected: float) -> None:
    deadline = injected + 240
    while time.monotonic() < deadline:
        try:
            target.agent.call("guest-ping", timeout=2)
        except GuestAgentError:
            time.sleep(0.2)
            continue
        with tally.lock:
            tally.recovery[fault].append(time.monotonic() - injected)
        return
    with tally.lock:
        tally.recovery[fault].append(float("inf"))


def injector(
    target: Target,
    faults: list[tuple[str, Callable[[], None]]],
    tally: Tally,
    stop: threading.Event,
) -> None:
    """Breaks one target in turn (each target has its own injector, so a guest that takes
    minutes to reboot does not hold the others' faults up), and times its recovery."""
    i = 0
    while not stop.wait(3):
        label, inject = faults[i % len(faults)]
        i += 1
        try:
            inject()
        except GuestAgentError as exc:
            print(f"  (could not inject {label}: {exc})", flush=True)
            continue
        injected = time.monotonic()
        with tally.lock:
            tally.faults[label] += 1
        time.sleep(1.0)  # let it land (the agent is killed from a child it started)
        recover(target, tally, label, injected)
        print(f"  fault {label}: back after {tally.recovery[label][-1]:.1f} s", flush=True)


def faults_for(
    target: Target, host: HostAgent, proxy: DaemonProxy, conn: Any
) -> list[tuple[str, Callable[[], None]]]:
    """The target's faults, quick ones first; a guest reset (a whole boot under TCG)
    ends each round."""
    faults: list[tuple[str, Callable[[], None]]] = []
    if "kill" in target.faults:
        faults.append((f"{target.name}: agent killed", kill_agent(target)))
    if "stop" in target.faults:
        faults.append((f"{target.name}: agent stopped 4 s", stop_agent(target)))
    if target.name == "host":
        faults.append(("host: agent restarted", host.restart))
    if target.backend == "libvirt":
        faults.append(("libvirt: libvirtd restarted", lambda: restart(proxy)))
    if "reset" in target.faults:
        faults.append((f"{target.name}: guest reset", reset(conn, target)))
    return faults


def restart(proxy: DaemonProxy) -> None:
    proxy.down()
    time.sleep(1.0)
    proxy.up()


def reset(conn: Any, target: Target) -> Callable[[], None]:
    dom = conn.lookupByName(target.hostname)

    def inject() -> None:
        dom.reset()

    return inject


def kill_agent(target: Target) -> Callable[[], None]:
    def inject() -> None:
        target.agent.call(
            "guest-exec", {"path": "/bin/sh", "arg": ["-c", "sleep 0.5; kill -9 $PPID"]}
        )

    return inject


def stop_agent(target: Target) -> Callable[[], None]:
    def inject() -> None:
        target.agent.call(
            "guest-exec",
            {
                "path": "/bin/sh",
                # The pause lets the agent send this exec's reply before it stops.
                "arg": ["-c", "sleep 0.5; kill -STOP $PPID; sleep 4; kill -CONT $PPID"],
            },
        )

    return inject


def main(seconds: float = 150.0) -> Tally:
    libvirt.registerErrorHandler(lambda _ctx, _error: None, None)  # faults are expected
    conn = libvirt.open(LOCAL_URI)
    prefix = f"qgasoak{os.getpid()}"
    names = {"lv": f"{prefix}-lv", "sk": f"{prefix}-sk"}
    image = tinyguest.build()
    stop = threading.Event()
    tally = Tally()
    print(f"soak: booting {', '.join(names.values())} ...", flush=True)
    try:
        tinyguest.start(conn, names["lv"], image, agent="libvirt", data_disk=False)
        tinyguest.start(conn, names["sk"], image, agent="socket", data_disk=False)
        with ThreadPoolExecutor(2) as pool:

            def wait(name: str) -> None:
                GuestAgent.from_domain(name, conn).wait_for_agent(240)

            list(pool.map(wait, names.values()))
        with HostAgent() as host, DaemonProxy() as proxy:
            targets = {
                "host": Target(
                    "host",
                    "socket",
                    GuestAgent.from_socket(host.socket, TIMEOUT),
                    os.uname().nodename,
                    [],
                ),
                "sock": Target(
                    "sock",
                    "socket",
                    GuestAgent.from_domain(names["sk"], conn, TIMEOUT),
                    names["sk"],
                    ["kill", "stop", "reset"],
                ),
                "libvirt": Target(
                    "libvirt",
                    "libvirt",
                    GuestAgent.from_domain(names["lv"], proxy.uri, TIMEOUT),
                    names["lv"],
                    ["kill", "stop", "reset"],
                ),
            }
            threads = [
                threading.Thread(target=worker, args=(t, tally, stop, n * 7 + k), daemon=True)
                for n, t in enumerate(targets.values())
                for k in range(2)
            ]
            threads += [
                threading.Thread(
                    target=injector,
                    args=(t, faults_for(t, host, proxy, conn), tally, stop),
                    daemon=True,
                )
                for t in targets.values()
            ]
            started = time.monotonic()
            print(f"soak: running {seconds:.0f} s", flush=True)
            for t in threads:
                t.start()
            stop.wait(seconds)
            stop.set()
            for t in threads:
                t.join(150)
            elapsed = time.monotonic() - started
            for target in targets.values():
                target.agent.close()
    finally:
        stop.set()
        for name in names.values():
            tinyguest.destroy(conn, name)
    report(tally, elapsed)
    return tally


def report(tally: Tally, elapsed: float) -> None:
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"\nsoak over {elapsed:.0f} s (load average {load})")
    print(f"  calls made          {sum(tally.calls.values())}  {dict(tally.calls)}")
    print(f"  faults injected     {sum(tally.faults.values())}")
    print(f"  wrong replies       {len(tally.wrong)}")
    print(f"  untyped errors      {len(tally.untyped)}")
    print(f"  past timeout >10%   {len(tally.late)}")
    print(
        f"  past timeout, within libvirt's {LIBVIRT_SYNC_SECONDS} s sync bound "
        f"{tally.late_within_libvirt_bound}"
    )
    print("  typed errors        " + ", ".join(f"{k} {v}" for k, v in tally.typed.most_common()))
    print("  recovery per fault (s):")
    for label, times in sorted(tally.recovery.items()):
        shown = ", ".join(f"{t:.1f}" for t in times)
        print(f"    {label:32} {shown}")
    for what, items in (("wrong", tally.wrong), ("untyped", tally.untyped), ("late", tally.late)):
        for item in items[:5]:
            print(f"  {what}: {item}")


if __name__ == "__main__":
    main(float(sys.argv[1]) if len(sys.argv) > 1 else 150.0)
