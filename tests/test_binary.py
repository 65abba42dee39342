"""Which darknet is this? Found from the flags compiled into the executable or its libdarknet."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from supervisor.runtime.binary import BinaryError, detect_flavour, resolve_binary


def fake(path: Path, content: bytes) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x7fELF" + os.urandom(3000) + content + os.urandom(3000))
    path.chmod(0o755)
    return str(path)


def test_debian_darknet_is_pjreddie(darknet_bin: str) -> None:
    assert detect_flavour(darknet_bin) == "pjreddie"


@pytest.mark.parametrize(
    ("content", "flavour"),
    [
        (b"\x00-dont_show\x00-mjpeg_port\x00", "alexeyab"),
        (b"\x00Darknet/YOLO v3\x00-nocolour\x00-dont_show\x00", "hankai"),
        (b"\x00usage: %s <function>\x00", "pjreddie"),
    ],
)
def test_flavour_from_strings_in_the_binary(tmp_path: Path, content: bytes, flavour: str) -> None:
    assert detect_flavour(fake(tmp_path / "bin" / "darknet", content)) == flavour


def test_flavour_from_a_libdarknet_next_to_the_binary(tmp_path: Path) -> None:
    exe = fake(tmp_path / "bin" / "darknet", b"usage")
    fake(tmp_path / "lib" / "libdarknet.so", b"\x00dont_show\x00")
    assert detect_flavour(exe) == "alexeyab"


def test_a_marker_split_across_read_chunks_is_found(tmp_path: Path) -> None:
    from supervisor.runtime import binary

    p = tmp_path / "darknet"
    chunk = binary._CHUNK
    p.write_bytes(b"x" * (chunk - 4) + b"dont_show" + b"x" * 10)
    assert detect_flavour(str(p)) == "alexeyab"


def test_resolve_binary_errors_say_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(BinaryError, match="does not exist"):
        resolve_binary(str(tmp_path / "nope"))
    f = tmp_path / "notexec"
    f.write_text("")
    with pytest.raises(BinaryError, match="chmod"):
        resolve_binary(str(f))
    with pytest.raises(BinaryError, match="apt-get install darknet"):
        resolve_binary("surely-not-a-darknet-binary")


def test_resolve_binary_finds_names_on_path(darknet_bin: str) -> None:
    assert resolve_binary("darknet") == darknet_bin
