"""docs/commands.md is generated from the declarations and must not go stale."""

from __future__ import annotations

import inspect
import re
import subprocess
import sys
from pathlib import Path

import pytest

from qga_libvirt import _docgen
from qga_libvirt.commands import all_commands

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "commands.md"


def test_commands_md_is_up_to_date() -> None:
    assert DOC.read_text(encoding="utf-8") == _docgen.render(), (
        "docs/commands.md is stale: run python -m qga_libvirt._docgen"
    )


def test_every_command_has_its_section() -> None:
    text = _docgen.render()
    for cmd in all_commands():
        section = text.split(f"\n### {cmd.wire}\n", 1)[1].split("\n### ", 1)[0]
        assert f"agent.{cmd.method}(" in section
        assert cmd.summary in section
        assert f"Since QEMU {cmd.facts.since}" in section
        assert cmd.facts.platforms in section
        for name in inspect.signature(cmd.build).parameters:
            assert f"| `{name}` |" in section, (cmd.wire, name)


def test_models_list_their_wire_names() -> None:
    text = _docgen.render()
    assert "| `data` | `buf-b64` | bytes |" in text
    assert "| `ip_address_type` | `ip-address-type` | [IpAddressType](#ipaddresstype) |" in text
    assert "`file-backed-virtual`" in text


def test_links_point_at_sections() -> None:
    text = _docgen.render()
    anchors = {heading.lower() for heading in re.findall(r"^### (\S+)$", text, re.MULTILINE)}
    links = set(re.findall(r"\]\(#([^)]+)\)", text))
    assert links
    assert links <= anchors


def test_check_exits_1_when_stale_and_0_when_fresh(tmp_path: Path) -> None:
    target = tmp_path / "commands.md"
    assert _docgen.main(["--check", "--output", str(target)]) == 1
    assert _docgen.main(["--output", str(target)]) == 0
    assert _docgen.main(["--check", "--output", str(target)]) == 0
    target.write_text(target.read_text() + "edited by hand\n")
    assert _docgen.main(["--check", "--output", str(target)]) == 1


@pytest.mark.parametrize(
    ("args", "code"), [(["--check"], 0), (["--check", "--output", "/nonexistent/x.md"], 1)]
)
def test_the_module_runs_as_a_script(args: list[str], code: int) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "qga_libvirt._docgen", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == code, result.stderr
