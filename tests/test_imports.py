"""What starting up imports: the package, ``qga --version``/``--help`` and a socket ping
need none of pydantic, libvirt, lxml and mcp (issue 13). Each case runs in a fresh
interpreter and reports the top-level packages it imported; nothing here is timed."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import qga_libvirt
from qga_libvirt.testing import HostAgent

HEAVY = ("pydantic", "libvirt", "libvirt_qemu", "lxml", "mcp")

# Runs `qga ARGS...` in this interpreter, then prints which HEAVY packages it imported.
QGA = """
import json, sys
from qga_libvirt.cli import main
heavy = {heavy!r}
try:
    code = main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
print(json.dumps([code, sorted({{m.split(".")[0] for m in sys.modules}} & set(heavy))]))
"""


def _qga(*args: str) -> tuple[int, list[str]]:
    """(exit code, heavy packages imported) of ``qga ARGS`` in a fresh interpreter."""
    script = QGA.format(heavy=HEAVY)
    proc = subprocess.run(
        [sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    code, heavy = json.loads(proc.stdout.strip().splitlines()[-1])
    return code, heavy


def _imported(code: str) -> list[str]:
    """The heavy packages that running ``code`` in a fresh interpreter imports."""
    script = (
        f"{code}\nimport json, sys\n"
        f"print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & {set(HEAVY)!r})))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    imported: list[str] = json.loads(proc.stdout)
    return imported


def test_import_qga_libvirt_imports_nothing_heavy() -> None:
    assert _imported("import qga_libvirt") == []


def test_the_client_and_the_cli_import_nothing_heavy() -> None:
    assert _imported("from qga_libvirt import GuestAgent, GuestAgentError, RunResult") == [
        "pydantic"
    ]  # RunResult is a model: asking for it imports pydantic, nothing else
    assert _imported("from qga_libvirt import GuestAgent, GuestAgentError, FleetTarget") == []
    assert _imported("import qga_libvirt.cli.app, qga_libvirt.client") == []


def test_a_model_imports_pydantic_but_not_libvirt() -> None:
    assert _imported("from qga_libvirt import AgentInfo") == ["pydantic"]
    assert _imported("from qga_libvirt.models import OsInfo") == ["pydantic"]


def test_a_libvirt_name_imports_libvirt() -> None:
    assert {"libvirt", "lxml"} <= set(_imported("from qga_libvirt import list_domains"))


@pytest.mark.parametrize("args", [("--version",), ("--help",)])
def test_qga_version_and_help_import_nothing_heavy(args: tuple[str, ...]) -> None:
    assert _qga(*args) == (0, [])


def test_a_socket_ping_imports_nothing_heavy() -> None:
    with HostAgent() as host:
        assert _qga("--socket", str(host.socket), "ping") == (0, [])
        # A reply model is the first thing that needs pydantic; still no libvirt.
        assert _qga("--socket", str(host.socket), "osinfo") == (0, ["pydantic"])


def test_every_exported_name_resolves_lazily() -> None:
    where = qga_libvirt._WHERE
    assert set(where) == set(qga_libvirt.__all__)
    for name in qga_libvirt.__all__:
        value = getattr(qga_libvirt, name)
        module = sys.modules[f"qga_libvirt.{where[name]}"]
        assert value is getattr(module, name), name
    assert set(qga_libvirt.__all__) <= set(dir(qga_libvirt))
    with pytest.raises(AttributeError, match="no attribute 'NoSuchName'"):
        getattr(qga_libvirt, "NoSuchName")  # noqa: B009


def test_submodules_are_attributes_of_the_package_as_before() -> None:
    out = _imported(
        "import qga_libvirt\n"
        "assert qga_libvirt.errors.GuestAgentError is qga_libvirt.GuestAgentError\n"
        "assert qga_libvirt.models.OsInfo.__name__ == 'OsInfo'"
    )
    assert out == ["pydantic"]


def test_a_declared_reply_resolves_at_first_use() -> None:
    out = _imported(
        "from qga_libvirt.commands import Commands\n"
        "assert Commands.ping.reply is None and not Commands.ping.returns\n"
        "assert Commands.get_osinfo.returns\n"
        "import sys; assert 'pydantic' not in sys.modules\n"
        "from qga_libvirt.models import OsInfo\n"
        "assert Commands.get_osinfo.reply is OsInfo"
    )
    assert out == ["pydantic"]
