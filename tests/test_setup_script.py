"""scripts/setup.sh installs Debian's darknet only when asked (issue: never behind the back of
someone with their own build), run against fake apt-get/dpkg/python in a copy of the scripts."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def fake(bin_dir: Path, name: str, body: str) -> None:
    p = bin_dir / name
    p.write_text(f"#!/bin/sh\n{body}\n")
    p.chmod(0o755)


def setup(tmp_path: Path, *args: str, dpkg_has_darknet: bool) -> list[str]:
    (tmp_path / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "setup.sh", tmp_path / "scripts" / "setup.sh")
    venv_bin = tmp_path / ".venv" / "bin"
    venv_bin.mkdir(parents=True)
    calls = tmp_path / "calls"
    fake(venv_bin, "python", f'echo "python $*" >> {calls}')
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake(bin_dir, "apt-get", f'echo "apt-get $*" >> {calls}')
    fake(bin_dir, "sudo", '"$@"')
    fake(bin_dir, "dpkg", "exit 0" if dpkg_has_darknet else "exit 1")
    fake(bin_dir, "darknet", "echo 'usage: darknet <function>'")  # the user's own build
    env = {**os.environ, "PATH": f"{bin_dir}:/usr/bin:/bin"}
    done = subprocess.run(
        ["bash", str(tmp_path / "scripts" / "setup.sh"), *args],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return calls.read_text().splitlines() if calls.exists() else []


def test_no_system_package_without_the_flag(tmp_path: Path) -> None:
    calls = setup(tmp_path, dpkg_has_darknet=False)
    assert not [c for c in calls if c.startswith("apt-get")]
    assert any("pip install" in c and "-e" in c for c in calls)


def test_the_flag_installs_debian_darknet_when_missing(tmp_path: Path) -> None:
    calls = setup(tmp_path, "--debian-darknet", dpkg_has_darknet=False)
    assert [c for c in calls if c.startswith("apt-get")] == [
        "apt-get update -q",
        "apt-get install -y -q darknet",
    ]


def test_the_flag_does_nothing_when_the_package_is_there(tmp_path: Path) -> None:
    calls = setup(tmp_path, "--debian-darknet", dpkg_has_darknet=True)
    assert not [c for c in calls if c.startswith("apt-get")]


def test_unknown_arguments_are_refused(tmp_path: Path) -> None:
    with pytest.raises(AssertionError, match="usage"):
        setup(tmp_path, "--install-everything", dpkg_has_darknet=True)
