"""The wheel works on its own: built from the tree, installed into a fresh venv outside
the checkout (its dependencies from the wheelhouse scripts/setup.sh collects, offline),
and used from there: ``qga --help``, the library and ``qga`` against a real qemu-ga,
``qga-mcp`` refused with the way out until the ``mcp`` extra is installed, then
``qga-mcp --help``.
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from qga_libvirt.testing import HostAgent

pytestmark = pytest.mark.agent

ROOT = Path(__file__).resolve().parent.parent
WHEELHOUSE = ROOT / ".venv" / "wheelhouse"
PIP = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]


@dataclass(frozen=True)
class Installed:
    wheel: Path
    venv: Path
    home: Path
    """An empty directory outside the checkout, the working directory of every run."""

    def bin(self, name: str) -> str:
        return str(self.venv / "bin" / name)

    def run(self, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        env = {"PATH": f"{self.venv / 'bin'}:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": str(self.home)}
        return subprocess.run(
            argv,
            cwd=self.home,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def pip_install(self, *requirements: str) -> None:
        """Into the venv, offline: the wheelhouse, and the wheel's own directory."""
        subprocess.run(
            [
                *(*PIP, "--python", self.bin("python"), "install", "--no-index"),
                *("--find-links", str(WHEELHOUSE), "--find-links", str(self.wheel.parent)),
                *requirements,
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    if not (WHEELHOUSE / ".stamp").is_file():
        pytest.fail(f"{WHEELHOUSE} is missing: run scripts/setup.sh (make setup)")
    base = tmp_path_factory.mktemp("wheel")
    assert not base.resolve().is_relative_to(ROOT)
    dist, venv, home = base / "dist", base / "venv", base / "home"
    home.mkdir()
    subprocess.run(
        [*PIP, "wheel", "--no-deps", "--no-build-isolation", "-w", str(dist), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    (wheel,) = dist.glob("qga_libvirt-*.whl")
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(venv)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    found = Installed(wheel, venv, home)
    found.pip_install(str(wheel))  # the library and qga only: no extra
    return found


def test_the_wheel_holds_the_packages_and_nothing_of_the_checkouts_tooling(
    installed: Installed,
) -> None:
    names = zipfile.ZipFile(installed.wheel).namelist()
    tops = {name.split("/", 1)[0] for name in names if not name.startswith("qga_libvirt-")}
    assert tops == {"qga_libvirt", "mcp_server"}
    assert "qga_libvirt/py.typed" in names
    assert "qga_libvirt/testing.py" in names  # users' tests need it
    for tooling in ("tinyguest", "docgen", "cli/docs.py"):
        assert not any(tooling in name for name in names), tooling


def test_every_library_module_imports_from_the_venv_without_the_mcp_sdk(
    installed: Installed,
) -> None:
    """Nothing in the library reaches for a file of the checkout, or for the MCP SDK."""
    script = (
        "import importlib, pkgutil, sys\n"
        "import qga_libvirt\n"
        "assert qga_libvirt.__file__.startswith(sys.prefix), qga_libvirt.__file__\n"
        "names = [m.name for m in pkgutil.walk_packages(qga_libvirt.__path__, 'qga_libvirt.')]\n"
        "for name in names:\n"
        "    if not name.endswith('.__main__'):  # that one runs qga\n"
        "        importlib.import_module(name)\n"
        "assert 'mcp' not in sys.modules\n"
        "print(len(names))\n"
    )
    result = installed.run(installed.bin("python"), "-c", script)
    assert result.returncode == 0, result.stderr
    assert int(result.stdout) > 20


def test_qga_runs_from_the_venv(installed: Installed) -> None:
    result = installed.run(installed.bin("qga"), "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: qga")


def test_a_real_agent_answers_the_installed_library_and_qga(
    installed: Installed, tmp_path: Path
) -> None:
    script = (
        "import sys\n"
        "from qga_libvirt import GuestAgent\n"
        "from qga_libvirt.testing import HostAgent\n"
        "with HostAgent(sys.argv[1]) as host:\n"
        "    with GuestAgent.from_socket(host.socket) as agent:\n"
        "        agent.ping()\n"
        "        print(agent.info().version)\n"
    )
    result = installed.run(installed.bin("python"), "-c", script, str(tmp_path / "agent"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()[0].isdigit()  # "7.2.22"
    with HostAgent(tmp_path / "qga") as host:
        result = installed.run(installed.bin("qga"), "--socket", str(host.socket), "ping")
    assert result.returncode == 0, result.stderr


def test_qga_mcp_needs_the_mcp_extra_and_says_so_then_runs(installed: Installed) -> None:
    result = installed.run(installed.bin("qga-mcp"), "--help")
    assert result.returncode != 0
    assert "pip install 'qga-libvirt[mcp]'" in result.stderr
    installed.pip_install("qga-libvirt[mcp]")
    result = installed.run(installed.bin("qga-mcp"), "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: qga-mcp")
