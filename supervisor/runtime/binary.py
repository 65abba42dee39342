"""Prove that an executable is darknet, and tell which flavour, before it gets a job's argv.

issue 14: `binary: rm` once ran `rm detector train … victim.weights`. Nothing gets a job's
arguments until `probe_binary` has proven it is darknet, in two steps:

1. Without running it: the executable (or the libdarknet next to it) must contain the word
   darknet at all. `rm`, `sh`, `python3` do not, so they are refused without being run.
2. Running it WITHOUT arguments (an argv list, never a shell; stdin /dev/null, its own session,
   a few seconds, 64 KiB of output at most): every flavour then prints its usage and exits
   (pjreddie and AlexeyAB: `usage: <argv0> <function>` on stderr, exit 0 — verified with the
   Debian binary; hank-ai: `Darknet/YOLO CLI usage:` on stdout, after its `Darknet V5 …`
   banner). Nothing else counts as proof.

The flavour: hank-ai by that usage text or its strings; AlexeyAB prints pjreddie's usage, so
it is told by the flags compiled into it (`dont_show`, `mjpeg_port`, …, and the `-nogpu`
refusal in its main); pjreddie otherwise. For an ELF executable the absence of AlexeyAB's
flags is decisive; a script wrapping darknet shows none of them, so there a written flavour is
believed (`Probe.decisive`). A CUDA build is recognised by the CUDA runtime it links (it
decides whether `gpus: []` can train on the CPU, see `command.cpu_problem`).

Probes are cached per executable (path, size, mtime, and the same for the libdarknet files
read), in memory and in `$XDG_CACHE_HOME/trainsup/binaries.json`; a damaged cache is a miss.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import selectors
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, cast

from supervisor.training.events import FLAVOURS, Flavour

__all__ = [
    "PROBE_OUTPUT_CAP",
    "PROBE_TIMEOUT",
    "BinaryError",
    "Probe",
    "detect_flavour",
    "probe_binary",
    "resolve_binary",
    "verify_binary",
]

# Strings only that flavour contains (its flag names and banners).
_HANKAI = (b"Darknet/YOLO", b"hank.ai", b"-nocolour")
_ALEXEYAB = (
    b"dont_show",
    b"mjpeg_port",
    b"calc_map_for_each",
    # In AlexeyAB's main (darknet.c), so in the executable even when the rest is a library.
    b"Currently Darknet doesn't support -nogpu",
)
# Compiled in only with GPU=1 / DARKNET_GPU: the CUDA runtime it links and darknet's own CUDA
# messages (pjreddie's check_error, AlexeyAB's show_cuda_cudnn_info, hank-ai's CHECK_CUDA).
_CUDA = (b"libcudart", b"cudaSetDevice", b"CUDA Error", b"CUDA-version", b"CUDA status Error")
# Step 1: some spelling of the name. Deliberately weak: it only spares non-darknet programs
# from being run at all; step 2 is the proof.
_NAME = (b"darknet", b"Darknet", b"DARKNET")
_CHUNK = 1 << 20

PROBE_TIMEOUT = 10.0
"""Seconds the argument-less run may take. darknet prints its usage at once; a CUDA build of
hank-ai initialises the GPU first, which takes a few seconds on some machines."""
PROBE_OUTPUT_CAP = 64 * 1024
"""Bytes of output read from it; darknet's usage is under 4 KiB."""

_CLASSIC_USAGE = re.compile(r"^usage: \S.* <function>\s*$", re.MULTILINE)
_HANKAI_USAGE = re.compile(
    r"^(?:Darknet/YOLO CLI usage:|Darknet V\d+ \S|Darknet v\d)", re.MULTILINE
)
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_CACHE_VERSION = 1


class BinaryError(Exception):
    """The darknet binary cannot be used; the message says what to do. `key` is the job-file
    key at fault (`darknet.binary`, or `darknet.flavour` when the flavour contradicts it)."""

    def __init__(self, message: str, key: str = "darknet.binary") -> None:
        super().__init__(message)
        self.key = key


@dataclass(frozen=True, slots=True)
class Probe:
    """What an executable proved about itself."""

    path: str  # absolute; what was run and what the job will run
    flavour: Flavour
    usage: str  # the line of its argument-less output that proved it darknet
    evidence: str  # why this flavour, for messages
    decisive: bool  # False only where the flavour is a guess (a script wrapping darknet)
    cuda: bool  # a GPU build: it (or its libdarknet) links the CUDA runtime


def resolve_binary(binary: str) -> str:
    """An absolute path to a proven darknet executable: `binary` itself if it is a path, else
    from PATH. Raises BinaryError when it is missing, not executable, or not darknet."""
    return probe_binary(binary).path


def detect_flavour(binary: str) -> Flavour:
    """The flavour of a darknet executable (proving it darknet first, see `probe_binary`)."""
    return probe_binary(binary).flavour


def verify_binary(binary: str, flavour: str = "auto") -> Probe:
    """Locate and prove `binary`; a written `flavour` (not `auto`) must be the one found.

    This is what must run before a job's argv is built: the Probe's `path` and `flavour` are
    the ones to launch with."""
    if flavour != "auto" and flavour not in FLAVOURS:
        raise BinaryError(
            f"unknown darknet flavour {flavour!r}; expected auto or one of {FLAVOURS}",
            key="darknet.flavour",
        )
    probe = probe_binary(binary)
    if flavour in ("auto", probe.flavour):
        return probe
    if not probe.decisive:
        # A script wrapping darknet shows no flags of its own: believe what is written.
        return _with_flavour(probe, cast(Flavour, flavour))
    raise BinaryError(
        f"flavour {flavour} was written, but {probe.path} is {probe.flavour} darknet "
        f"({probe.evidence}); arguments for {flavour} would break it (darknet-facts §8). "
        f"Write flavour: {probe.flavour} (or auto), or point darknet.binary at a darknet of "
        f"flavour {flavour}",
        key="darknet.flavour",
    )


def probe_binary(binary: str, *, timeout: float = PROBE_TIMEOUT) -> Probe:
    """Prove that `binary` (a path, or a name on PATH) is darknet and read its flavour
    (cached per executable and its libdarknet: path, size, mtime, inode, ctime)."""
    path = _locate(binary)
    try:
        exe = os.stat(path)
    except OSError as e:
        raise BinaryError(f"darknet binary {binary}: {e.strerror}; fix darknet.binary") from None
    libs = _linked_darknet_libs(Path(path))
    stamp = _stamp(path, exe, libs)
    cached = _MEMORY.get(path)
    if cached is not None and cached[0] == stamp:
        return cached[1]
    probe = _from_disk_cache(path, stamp)
    if probe is None:
        probe = _probe(path, libs, timeout)
        _to_disk_cache(path, stamp, probe)
    _MEMORY[path] = (stamp, probe)
    return probe


# --- locating --------------------------------------------------------------------------------


def _locate(binary: str) -> str:
    if os.sep in binary or binary.startswith("~"):
        p = Path(binary).expanduser()
        if not p.is_file():
            what = "is a directory" if p.is_dir() else "does not exist"
            raise BinaryError(f"darknet binary {binary} {what}; fix darknet.binary")
        if not os.access(p, os.X_OK):
            raise BinaryError(f"darknet binary {binary} is not executable (chmod +x it)")
        return str(p.absolute())
    found = shutil.which(binary)
    if found is None:
        raise BinaryError(
            f"`{binary}` is not on PATH; install darknet (`apt-get install darknet` gives the "
            "pjreddie flavour) or set darknet.binary to the executable's path"
        )
    return str(Path(found).absolute())


def _linked_darknet_libs(binary: Path) -> list[Path]:
    """libdarknet.so files next to the binary or in ../lib (where builds put them)."""
    out: list[Path] = []
    for d in (binary.parent, binary.parent.parent / "lib", binary.parent.parent / "lib64"):
        try:
            if d.is_dir():
                out += sorted(p for p in d.iterdir() if re.match(r"lib.*dark.*\.so", p.name))
        except OSError:
            continue
    return out


# --- the probe itself ------------------------------------------------------------------------


def _probe(path: str, libs: list[Path], timeout: float) -> Probe:
    try:
        with open(path, "rb") as f:
            head = f.read(4)
        found = _scan(Path(path), (*_NAME, *_HANKAI, *_ALEXEYAB, *_CUDA))
        for lib in libs:
            found |= _scan(lib, (*_HANKAI, *_ALEXEYAB, *_CUDA))
    except OSError as e:
        raise BinaryError(f"cannot read darknet binary {path}: {e.strerror}") from None
    if not found & set(_NAME):
        raise BinaryError(
            f"{path} is not darknet: the word darknet appears nowhere in it, so it was not "
            "run. Set darknet.binary to the darknet executable (Debian: /usr/bin/darknet)"
        )
    output = _run_without_arguments(path, timeout)
    usage = _usage_line(output)
    if usage is None:
        tail = output.strip()[-300:] or "nothing"
        raise BinaryError(
            f"{path} is not darknet: run without arguments it printed {tail!r} instead of "
            "darknet's usage (`usage: … <function>`, or `Darknet/YOLO CLI usage:`). Set "
            "darknet.binary to the darknet executable; it was given no job arguments"
        )
    cuda = bool(found & set(_CUDA))
    if found & set(_HANKAI) or _HANKAI_USAGE.search(usage):
        return Probe(path, "hankai", usage, "hank-ai's usage text and banner", True, cuda)
    markers = sorted(m.decode() for m in found & set(_ALEXEYAB))
    if markers:
        evidence = f"it carries AlexeyAB's {', '.join(markers)}"
        return Probe(path, "alexeyab", usage, evidence, True, cuda)
    decisive = head == b"\x7fELF"
    evidence = (
        "an executable that carries none of AlexeyAB's or hank-ai's flags, e.g. dont_show"
        if decisive
        else "a script that prints darknet's usage; its flavour cannot be read from it"
    )
    return Probe(path, "pjreddie", usage, evidence, decisive, cuda)


def _run_without_arguments(path: str, timeout: float) -> str:
    """Its stdout and stderr, run with no argument at all (so no file of the job reaches an
    unproven program); killed with its whole session when it outlives `timeout`."""
    with tempfile.TemporaryDirectory(prefix="trainsup-probe-") as cwd:
        try:
            proc = subprocess.Popen(
                [path],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                cwd=cwd,  # whatever it writes lands in a throw-away folder
                start_new_session=True,
                close_fds=True,
            )
        except OSError as e:
            raise BinaryError(
                f"{path} cannot be run ({e.strerror}); set darknet.binary to the darknet executable"
            ) from None
        assert proc.stdout is not None
        chunks: list[bytes] = []
        size = 0
        timed_out = False
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            while size < PROBE_OUTPUT_CAP:
                left = deadline - time.monotonic()
                if left <= 0 or not sel.select(left):
                    timed_out = True
                    break
                data = os.read(proc.stdout.fileno(), 65536)
                if not data:
                    break
                chunks.append(data)
                size += len(data)
        # Kill the session before reaping the leader: while it is an unreaped zombie its pid
        # (= the group id) cannot be reused, so this never reaches another process group.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.stdout.close()
        proc.wait()
    text = _ANSI.sub("", b"".join(chunks)[:PROBE_OUTPUT_CAP].decode("utf-8", "replace"))
    if timed_out and _usage_line(text) is None:
        raise BinaryError(
            f"{path} is not darknet: run without arguments it was still running after "
            f"{timeout:g} s (darknet prints its usage and exits at once); it was killed and "
            "given no job arguments. Set darknet.binary to the darknet executable"
        )
    return text


def _usage_line(output: str) -> str | None:
    for pattern in (_HANKAI_USAGE, _CLASSIC_USAGE):
        m = pattern.search(output)
        if m is not None:
            line_end = output.find("\n", m.start())
            return output[m.start() : line_end if line_end >= 0 else None].strip()[:200]
    return None


def _scan(path: Path, needles: tuple[bytes, ...]) -> set[bytes]:
    """Which of `needles` occur in the file (read once, in chunks)."""
    keep = max(len(n) for n in needles)
    found: set[bytes] = set()
    tail = b""
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            window = tail + chunk
            found.update(n for n in needles if n not in found and n in window)
            if len(found) == len(needles):
                break
            tail = window[-keep:]
    return found


def _with_flavour(probe: Probe, flavour: Flavour) -> Probe:
    evidence = f"{probe.evidence}; flavour {flavour} as written"
    return Probe(probe.path, flavour, probe.usage, evidence, probe.decisive, probe.cuda)


# --- cache -----------------------------------------------------------------------------------

_Stamp = list[list[Any]]
_MEMORY: dict[str, tuple[_Stamp, Probe]] = {}


def _stamp(path: str, st: os.stat_result, libs: list[Path]) -> _Stamp:
    # ctime and inode too: a file replaced by another of the same size and mtime (`cp -p`)
    # still changes them, and no user can set ctime.
    rows: _Stamp = [[path, st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns]]
    for lib in libs:
        try:
            s = lib.stat()
        except OSError:
            continue
        rows.append([str(lib), s.st_size, s.st_mtime_ns, s.st_ino, s.st_ctime_ns])
    return rows


def _cache_file() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "trainsup" / "binaries.json"


def _read_cache() -> dict[str, Any]:
    try:
        data = json.loads(_cache_file().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("version") != _CACHE_VERSION:
        return {}
    entries = data.get("binaries")
    return entries if isinstance(entries, dict) else {}


def _from_disk_cache(path: str, stamp: _Stamp) -> Probe | None:
    entry = _read_cache().get(path)
    if not isinstance(entry, dict) or entry.get("stamp") != stamp:
        return None
    try:
        probe = Probe(**entry["probe"])
    except (KeyError, TypeError):
        return None
    if probe.flavour not in FLAVOURS or probe.path != path:
        return None
    return probe


def _to_disk_cache(path: str, stamp: _Stamp, probe: Probe) -> None:
    """Best effort: an unwritable cache only costs a probe next time."""
    file = _cache_file()
    entries = _read_cache()
    entries[path] = {"stamp": stamp, "probe": asdict(probe)}
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=file.parent, prefix=".binaries-", suffix=".json")
    except OSError:
        return
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump({"version": _CACHE_VERSION, "binaries": entries}, f)
        os.replace(tmp, file)  # atomic: a concurrent reader sees the old file or the new one
    except OSError:
        Path(tmp).unlink(missing_ok=True)
