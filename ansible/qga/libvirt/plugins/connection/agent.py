# Copyright (c) qga-libvirt developers
# MIT License (see the repository's pyproject.toml)
"""Ansible connection plugin: tasks run in the guest through the QEMU guest agent.

Everything goes through the ``qga_libvirt`` library: commands through ``run()`` (stdin,
exit codes, output that is never silently lost), files through ``upload()`` and
``download()`` (chunked to fit the backend). This module only maps Ansible's options
onto the library and the library's errors onto Ansible's.
"""

from __future__ import annotations

DOCUMENTATION = r"""
name: agent
short_description: Run tasks in libvirt/QEMU guests through the QEMU guest agent
description:
  - Runs commands and copies files in a virtual machine through its QEMU guest agent
    (C(qemu-ga)), reached through libvirt (local or remote URI, by domain name, UUID or ID)
    or through a raw agent socket. The guest needs no network and no SSH server.
  - Commands get their standard input (so pipelining works), their exit code and their
    whole output; files are copied in chunks sized for the backend.
  - Commands run as the user the agent runs as, normally root; C(become) switches to
    another user with sudo or su from there (no password can be answered, the agent
    gives no terminal).
author: qga-libvirt developers
version_added: 0.1.0
requirements:
  - qga-libvirt (Python package) on the controller
  - qemu-guest-agent running in the guest, with guest-exec and guest-file-* enabled
options:
  domain:
    description:
      - The libvirt domain to reach, by name, UUID or numeric ID.
      - Defaults to the inventory host name (or C(ansible_host)).
    default: inventory_hostname
    type: string
    vars:
      - name: inventory_hostname
      - name: ansible_host
      - name: ansible_qga_domain
  uri:
    description:
      - The libvirt URI of the hypervisor, local or remote
        (C(qemu:///system), C(qemu+ssh://host/system), C(qemu+tls://host/system),
        C(qemu+tcp://host/system)).
      - Unset means what virsh would use (C(LIBVIRT_DEFAULT_URI), else C(qemu:///system)).
    type: string
    env:
      - name: LIBVIRT_DEFAULT_URI
    ini:
      - section: qga_connection
        key: uri
    vars:
      - name: ansible_libvirt_uri
      - name: ansible_qga_uri
  socket:
    description:
      - Path of a raw guest agent socket (a QEMU chardev C(server=on) socket that libvirt
        does not hold). When set, C(domain), C(uri) and C(backend) are not used.
    type: string
    vars:
      - name: ansible_qga_socket
  backend:
    description:
      - How to reach a domain's agent. C(libvirt) goes through libvirt's agent
        pass-through; C(socket) opens the channel's unix socket (a channel added through
        C(<qemu:commandline>)); C(auto) picks what works.
    type: string
    default: auto
    choices: [auto, libvirt, socket]
    ini:
      - section: qga_connection
        key: backend
    vars:
      - name: ansible_qga_backend
  timeout:
    description:
      - Seconds each guest agent call waits for its reply, and the first one (the check
        that the agent answers) too. A command's own run time is C(command_timeout).
    type: integer
    default: 10
    env:
      - name: ANSIBLE_TIMEOUT
    ini:
      - section: defaults
        key: timeout
    vars:
      - name: ansible_qga_timeout
    cli:
      - name: timeout
  command_timeout:
    description:
      - Seconds a command may run in the guest before the task fails (the process keeps
        running in the guest). 0 means no bound; Ansible's task C(timeout) keyword bounds
        a whole task either way.
    type: integer
    default: 0
    ini:
      - section: qga_connection
        key: command_timeout
    vars:
      - name: ansible_qga_command_timeout
  agent_wait:
    description:
      - Seconds to wait for an agent that does not answer yet (a guest still booting)
        before the host is reported unreachable. 0 means no waiting.
    type: integer
    default: 0
    ini:
      - section: qga_connection
        key: agent_wait
    vars:
      - name: ansible_qga_agent_wait
  pipelining:
    description:
      - Feed modules to the guest's Python on standard input instead of copying them to a
        file first, which saves agent round trips. On by default, since the guest agent passes
        standard input through (there is no C(requiretty) to trip over).
    type: boolean
    default: true
    env:
      - name: ANSIBLE_QGA_PIPELINING
    ini:
      - section: qga_connection
        key: pipelining
    vars:
      - name: ansible_pipelining
      - name: ansible_qga_pipelining
notes:
  - Linux and other POSIX guests. Windows guests are not supported by this plugin (its
    commands go through C(/bin/sh)); use the C(qga) command or the library for them.
  - The remote user is ignored; commands run as the agent's user (normally root).
"""

EXAMPLES = r"""
# inventory.ini: domains on this host and on a remote hypervisor
# [vms]
# web1
# db1 ansible_libvirt_uri=qemu+ssh://hv2/system
# [vms:vars]
# ansible_connection=qga.libvirt.agent
# ansible_python_interpreter=/usr/bin/python3

- hosts: vms
  gather_facts: false
  tasks:
    - ansible.builtin.raw: uname -a
    - ansible.builtin.copy:
        src: app.tar.gz
        dest: /srv/app.tar.gz
"""

import os
from collections.abc import Callable
from typing import Any

from ansible.errors import AnsibleConnectionFailure, AnsibleError, AnsibleFileNotFound
from ansible.module_utils.common.text.converters import to_bytes, to_text
from ansible.plugins.connection import ConnectionBase
from ansible.utils.display import Display

try:
    from qga_libvirt import (
        AgentTimeoutError,
        CommandTimeoutError,
        ConnectionLostError,
        GuestAgent,
        GuestAgentError,
        TransferError,
    )
except ImportError as exc:  # pragma: no cover - depends on the controller's Python
    _IMPORT_ERROR: ImportError | None = exc
else:
    _IMPORT_ERROR = None

display = Display()

SHELL = "/bin/sh"
"""Ansible hands over shell command lines; the guest's POSIX shell runs them."""


class Connection(ConnectionBase):
    """Run commands and copy files through a QEMU guest agent."""

    transport = "qga.libvirt.agent"
    has_pipelining = True
    has_tty = False  # guest-exec has no terminal: become cannot answer a password prompt

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._agent: GuestAgent | None = None

    # --- connecting ---------------------------------------------------------------------

    @property
    def _target(self) -> str:
        socket = self.get_option("socket")
        if socket:
            return f"agent socket {socket}"
        uri = self.get_option("uri")
        return f"domain {self.get_option('domain')}" + (f" on {uri}" if uri else "")

    def _connect(self) -> Connection:
        if self._connected:
            return self
        if _IMPORT_ERROR is not None:
            raise AnsibleError(
                "the qga.libvirt.agent connection needs the qga-libvirt Python package in "
                f"the controller's Python: pip install qga-libvirt ({_IMPORT_ERROR})"
            )
        timeout = float(self.get_option("timeout"))
        display.vvv(f"QGA CONNECT {self._target}", host=self._play_context.remote_addr)
        try:
            socket = self.get_option("socket")
            if socket:
                agent = GuestAgent.from_socket(socket, timeout)
            else:
                agent = GuestAgent.from_domain(
                    self.get_option("domain"),
                    self.get_option("uri") or None,
                    timeout,
                    backend=self.get_option("backend"),
                )
            wait = self.get_option("agent_wait")
            if wait:
                agent.wait_for_agent(float(wait))
            else:
                agent.ping()
        except GuestAgentError as exc:
            # Every failure to reach an agent that answers is Ansible's UNREACHABLE.
            raise AnsibleConnectionFailure(f"{self._target}: {exc}") from None
        self._agent = agent
        self._connected = True
        return self

    def _require_agent(self) -> GuestAgent:
        self._connect()
        assert self._agent is not None
        return self._agent

    def close(self) -> None:
        agent, self._agent = self._agent, None
        if agent is not None:
            agent.close()
        self._connected = False

    def reset(self) -> None:
        self.close()
        self._connect()

    # --- running ------------------------------------------------------------------------

    def exec_command(
        self, cmd: str, in_data: bytes | None = None, sudoable: bool = True
    ) -> tuple[int, bytes, bytes]:
        super().exec_command(cmd, in_data=in_data, sudoable=sudoable)
        agent = self._require_agent()
        if sudoable and self.become and self.become.expect_prompt():
            raise AnsibleError(
                f"{self._target}: become with a password cannot work through the guest agent "
                "(it gives the command no terminal to answer the prompt on). The agent "
                "normally runs as root, from where sudo and su ask for no password: "
                "drop the become password for this host"
            )
        display.vvv(f"QGA EXEC {cmd}", host=self._play_context.remote_addr)
        limit = self.get_option("command_timeout")
        try:
            result = agent.run(
                [SHELL, "-c", to_text(cmd)],
                input=to_bytes(in_data) if in_data is not None else None,
                timeout=float(limit) if limit else None,
            )
        except CommandTimeoutError as exc:
            raise AnsibleError(
                f"{self._target}: the command ran longer than command_timeout ({limit} s) "
                f"and is still running in the guest as pid {exc.pid}"
            ) from None
        except GuestAgentError as exc:
            raise self._failure("running a command", exc) from None
        for stream, cut in (
            ("stdout", result.stdout_truncated),
            ("stderr", result.stderr_truncated),
        ):
            if cut:
                display.warning(
                    f"{self._target}: the command's {stream} was cut at the agent's 16 MiB limit"
                )
        # Like subprocess: a process killed by signal N has return code -N.
        rc = result.exitcode if result.exitcode is not None else -(result.signal or 0)
        return rc, result.stdout, result.stderr

    # --- files --------------------------------------------------------------------------

    def put_file(self, in_path: str, out_path: str) -> None:
        super().put_file(in_path, out_path)
        display.vvv(f"QGA PUT {in_path} TO {out_path}", host=self._play_context.remote_addr)
        if not os.path.isfile(to_bytes(in_path, errors="surrogate_or_strict")):
            raise AnsibleFileNotFound(f"file or module does not exist: {in_path}")
        self._transfer(
            f"copying {in_path} to {out_path}",
            f"reading {in_path}",
            lambda agent: agent.upload(in_path, out_path),
        )

    def fetch_file(self, in_path: str, out_path: str) -> None:
        super().fetch_file(in_path, out_path)
        display.vvv(f"QGA FETCH {in_path} TO {out_path}", host=self._play_context.remote_addr)
        self._transfer(
            f"fetching {in_path}",
            f"writing {out_path}",
            lambda agent: agent.download(in_path, out_path),
        )

    def _transfer(self, what: str, local: str, move: Callable[[GuestAgent], object]) -> None:
        """One file transfer; its failures as Ansible's (``local``: the controller's side)."""
        agent = self._require_agent()
        try:
            move(agent)
        except OSError as exc:
            raise AnsibleError(f"{local} failed: {exc}") from None
        except GuestAgentError as exc:
            raise self._failure(what, exc) from None

    # --- errors -------------------------------------------------------------------------

    def _failure(self, what: str, exc: GuestAgentError) -> AnsibleError:
        """The library's error as Ansible's: the agent gone is UNREACHABLE, the rest fails.

        Raised ``from None``: the library's message already says what happened and what
        to do, and Ansible 2.19 would repeat every cause after it.
        """
        message = f"{self._target}: {what} failed: {exc}"
        cause = exc.__cause__ if isinstance(exc, TransferError) else exc
        lost = isinstance(cause, AgentTimeoutError | ConnectionLostError) or (
            isinstance(cause, GuestAgentError) and cause.is_unreachable
        )
        if lost:
            return AnsibleConnectionFailure(message)
        return AnsibleError(message)
