"""This checkout's Ansible collection (``ansible/qga/libvirt``), installed as a user would
install it, and what runs playbooks against it: for tests/test_ansible.py and
bench/ansible.py."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Final

__all__ = [
    "CALLBACK",
    "COLLECTION_SRC",
    "REPORT",
    "ansible_env",
    "install_callback",
    "install_collection",
]

COLLECTION_SRC: Final = Path(__file__).resolve().parent.parent / "ansible" / "qga" / "libvirt"
GALAXY: Final = Path(sys.executable).with_name("ansible-galaxy")
REPORT: Final = "report.json"
"""What :data:`CALLBACK` writes in the playbook's working directory."""

# ansible-core 2.19 no longer ships the json stdout callback (ansible.posix has it): this
# one writes every task result (with its host, status and seconds) and the stats.
CALLBACK: Final = """\
import json, time
from ansible.plugins.callback import CallbackBase

class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "report"
    CALLBACK_NEEDS_ENABLED = False

    def __init__(self):
        super().__init__()
        self.tasks, self.started = [], time.monotonic()

    def v2_playbook_on_task_start(self, task, is_conditional):
        self.started = time.monotonic()

    def _keep(self, result, status):
        flags = {} if status == "ok" else {status: True}
        self.tasks.append({
            "task": result._task.get_name(),
            "host": result._host.get_name(),
            "status": status,
            "seconds": time.monotonic() - self.started,
            "result": {**json.loads(json.dumps(result._result, default=str)), **flags},
        })

    def v2_runner_on_ok(self, result, **kwargs):
        self._keep(result, "ok")

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._keep(result, "failed")

    def v2_runner_on_unreachable(self, result):
        self._keep(result, "unreachable")

    def v2_playbook_on_stats(self, stats):
        hosts = sorted(stats.processed)
        report = {"tasks": self.tasks, "stats": {h: stats.summarize(h) for h in hosts}}
        with open("report.json", "w") as out:
            json.dump(report, out)
"""
"""A callback plugin: ``{"tasks": [{task, host, status, seconds, result}], "stats"}``."""


def install_collection(home: Path) -> Path:
    """Build the collection in ``home`` (``ansible-galaxy collection build``) and install
    the tarball into ``home/collections``; returns that collections path.

    Raises:
        RuntimeError: ansible-galaxy failed (its output is in the message).
    """
    collections = home / "collections"
    _galaxy(home, "build", str(COLLECTION_SRC))
    (tarball,) = home.glob("qga-libvirt-*.tar.gz")
    _galaxy(home, "install", str(tarball), "-p", str(collections))
    return collections


def _galaxy(home: Path, *args: str) -> None:
    done = subprocess.run(
        [str(GALAXY), "collection", *args], cwd=home, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"ansible-galaxy collection {args[0]} failed (exit {done.returncode}): "
            f"{(done.stderr or done.stdout).strip()}"
        )


def install_callback(home: Path) -> Path:
    """Write :data:`CALLBACK` into ``home/callbacks``; returns that directory (for
    ``callback_plugins`` in ansible.cfg)."""
    callbacks = home / "callbacks"
    callbacks.mkdir(exist_ok=True)
    (callbacks / "report.py").write_text(CALLBACK)
    return callbacks


def ansible_env(config: Path, home: Path) -> dict[str, str]:
    """This process's environment without its ``ANSIBLE_*`` settings, for one ansible.cfg
    and one ``ANSIBLE_HOME``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env.update(ANSIBLE_CONFIG=str(config), ANSIBLE_HOME=str(home), ANSIBLE_NOCOLOR="1")
    return env
