"""Which darknet is this? Its usage text proves it darknet; the flags compiled into the
executable or its libdarknet tell AlexeyAB from pjreddie (both print `usage: %s <function>`)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from supervisor.runtime import binary
from supervisor.runtime.binary import BinaryError, detect_flavour, probe_binary, resolve_binary

STANDIN = Path(__file__).parent / "standins" / "alexeyab_replay.py"


def script(path: Path, text: str, usage: str = 'echo "usage: $0 <function>" >&2') -> str:
    """An executable shell script whose text holds `text` (a stand-in's "strings") and which,
    run without arguments, prints `usage` like darknet's main."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/sh\n# darknet stand-in: {text}\n{usage}\n")
    path.chmod(0o755)
    return str(path)


@pytest.mark.darknet
def test_debian_darknet_is_pjreddie(darknet_bin: str) -> None:
    probe = probe_binary(darknet_bin)
    assert probe.flavour == "pjreddie" and detect_flavour(darknet_bin) == "pjreddie"
    # What the Debian binary prints with no arguments (stderr, exit 0), argv[0] as given.
    assert probe.usage == f"usage: {darknet_bin} <function>"
    assert probe.decisive and not probe.cuda  # an ELF without AlexeyAB's flags; a CPU build


@pytest.mark.parametrize(
    ("content", "flavour"),
    [
        ("-dont_show -mjpeg_port", "alexeyab"),
        ("Currently Darknet doesn't support -nogpu flag", "alexeyab"),
        ("Darknet/YOLO v3 -nocolour -dont_show", "hankai"),
        ("usage: %s <function>", "pjreddie"),
    ],
)
def test_flavour_from_strings_in_the_binary(tmp_path: Path, content: str, flavour: str) -> None:
    assert detect_flavour(script(tmp_path / "bin" / "darknet", content)) == flavour


def test_flavour_from_a_libdarknet_next_to_the_binary(tmp_path: Path) -> None:
    exe = script(tmp_path / "bin" / "darknet", "usage")
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "libdarknet.so").write_bytes(b"\x7fELF" + os.urandom(300) + b"dont_show")
    assert detect_flavour(exe) == "alexeyab"


def test_a_marker_split_across_read_chunks_is_found(tmp_path: Path) -> None:
    exe = script(tmp_path / "bin" / "darknet", "usage")
    chunk = binary._CHUNK
    lib = tmp_path / "lib" / "libdarknet.so"
    lib.parent.mkdir()
    lib.write_bytes(b"x" * (chunk - 4) + b"dont_show" + b"x" * 10)
    assert detect_flavour(exe) == "alexeyab"


def test_the_alexeyab_standin_is_recognised() -> None:
    probe = probe_binary(str(STANDIN))
    assert probe.flavour == "alexeyab" and probe.usage == f"usage: {STANDIN} <function>"


def test_resolve_binary_errors_say_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(BinaryError, match="does not exist"):
        resolve_binary(str(tmp_path / "nope"))
    with pytest.raises(BinaryError, match="is a directory"):
        resolve_binary(str(tmp_path))
    f = tmp_path / "notexec"
    f.write_text("")
    with pytest.raises(BinaryError, match="chmod"):
        resolve_binary(str(f))
    with pytest.raises(BinaryError, match="apt-get install darknet"):
        resolve_binary("surely-not-a-darknet-binary")


def test_resolve_binary_refuses_what_is_not_darknet(tmp_path: Path) -> None:
    for name in ("rm", "sh"):
        with pytest.raises(BinaryError, match="is not darknet") as err:
            resolve_binary(name)
        assert err.value.key == "darknet.binary"
    fake = script(tmp_path / "darknet", "", usage="echo 'Hello from darknet'")
    with pytest.raises(BinaryError, match="Hello from darknet"):
        resolve_binary(fake)


@pytest.mark.darknet
def test_resolve_binary_finds_names_on_path(darknet_bin: str) -> None:
    assert resolve_binary("darknet") == darknet_bin
