"""No binary gets a job's arguments before it is proven darknet (issue 14 point 1).

The probe runs it once without arguments (stdin /dev/null, its own session, a timeout, an
output cap) and reads its usage text; non-darknet programs are refused without being run at
all. Real parts: the Debian darknet for pjreddie, scripts that behave like the forks' mains.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from supervisor.runtime import binary
from supervisor.runtime.binary import BinaryError, probe_binary, verify_binary
from supervisor.runtime.preflight import check_binary, job_flavour
from supervisor.spec import JobSpec, SpecError, parse_spec

ROOT = Path(__file__).resolve().parent.parent
STANDIN = ROOT / "tests" / "standins" / "alexeyab_replay.py"
# What hank-ai's main prints without arguments (src-cli/darknet_cli.cpp, display_usage in
# src-lib/darknet_args_and_parms.cpp), in colour even into a pipe.
HANKAI_USAGE = (
    'printf \'Darknet V5 "Moonlit" \\033[1;37mv5.0-135-g9b2c1f8\\033[0m\\n\\n'
    "Darknet/YOLO CLI usage:\\n\\n\\t\\tdarknet <command> [<options>]\\n'"
)


def script(path: Path, body: str, text: str = "darknet") -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/sh\n# {text}\n{body}\n")
    path.chmod(0o755)
    return str(path)


def usage_script(path: Path, text: str = "darknet", extra: str = "") -> str:
    """A pjreddie/AlexeyAB-like main: with no arguments its usage on stderr, exit 0."""
    return script(path, f'{extra}\necho "usage: $0 <function>" >&2', text)


@pytest.fixture(autouse=True)
def fresh_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "xdg"
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    monkeypatch.setattr(binary, "_MEMORY", {})
    return cache / "trainsup" / "binaries.json"


def job(tmp_path: Path, darknet: str) -> str:
    for name in ("obj.data", "yolo.cfg"):
        (tmp_path / name).touch()
    return f"name: t\ndarknet:\n  data: obj.data\n  cfg: yolo.cfg\n{darknet}"


def spec_of(tmp_path: Path, darknet: str) -> JobSpec:
    return parse_spec(job(tmp_path, darknet), "job.yaml", tmp_path)


# --- what is not darknet is refused, and is never given job arguments ------------------------


@pytest.mark.parametrize("name", ["rm", "sh", "/bin/sh", sys.executable])
def test_programs_that_are_not_darknet_are_refused_unrun(name: str) -> None:
    with pytest.raises(BinaryError, match="is not darknet: the word darknet appears nowhere"):
        verify_binary(name)


def test_a_program_without_the_word_darknet_is_never_run(tmp_path: Path) -> None:
    mark = tmp_path / "ran"
    exe = script(tmp_path / "tool", f"touch {mark}", text="a tool")
    with pytest.raises(BinaryError, match="was not run"):
        verify_binary(exe)
    assert not mark.exists()


def test_a_program_that_does_not_print_darknets_usage_is_refused(tmp_path: Path) -> None:
    args = tmp_path / "args"
    exe = script(tmp_path / "darknet", f'echo "$#" > {args}\necho "hello from darknet"; exit 3')
    with pytest.raises(BinaryError, match="printed 'hello from darknet'") as err:
        verify_binary(exe)
    assert err.value.key == "darknet.binary" and "no job arguments" in str(err.value)
    assert args.read_text().strip() == "0"  # the probe passes no argument at all


def test_run_with_binary_rm_keeps_the_weights(tmp_path: Path) -> None:
    """The issue's case: `binary: rm`, `gpus: []`, `weights: victim.weights`."""
    victim = tmp_path / "victim.weights"
    victim.write_bytes(b"\0" * 100)
    path = tmp_path / "job.yaml"
    path.write_text(job(tmp_path, "  binary: rm\n  gpus: []\n  weights: victim.weights\n"))
    done = subprocess.run(
        [sys.executable, "-m", "supervisor.cli", "run", str(path), "--preflight", "off",
         "--workdir", str(tmp_path / "run")],
        capture_output=True, text=True, cwd=ROOT, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 2, done.stdout + done.stderr
    assert "is not darknet" in done.stderr
    assert victim.read_bytes() == b"\0" * 100


def test_check_refuses_a_missing_or_foreign_binary(tmp_path: Path) -> None:
    path = tmp_path / "job.yaml"
    for binary_line, words in [
        ("binary: rm", "is not darknet"),
        ("binary: /bin/sh", "is not darknet"),
        ("binary: ./no-such-darknet", "does not exist"),
    ]:
        path.write_text(job(tmp_path, f"  {binary_line}\n"))
        for extra in ([], ["--json"]):
            done = subprocess.run(
                [sys.executable, "-m", "supervisor.cli", "check", "--no-dataset", str(path),
                 *extra],
                capture_output=True, text=True, cwd=ROOT, timeout=120, check=False,
            )  # fmt: skip
            assert done.returncode == 2, (binary_line, done.stdout, done.stderr)
            assert words in done.stdout
            if extra:
                [f] = json.loads(done.stdout)["findings"]
                assert f["code"] == "job_binary" and f["message"].startswith("darknet.binary:")


def test_evaluate_refuses_a_binary_that_is_not_darknet(tmp_path: Path) -> None:
    for name in ("obj.data", "yolo.cfg", "w.weights"):
        (tmp_path / name).write_text("x")
    done = subprocess.run(
        [sys.executable, "-m", "supervisor.cli", "evaluate", "--data", "obj.data", "--cfg",
         "yolo.cfg", "--binary", "/bin/sh", "w.weights"],
        capture_output=True, text=True, cwd=tmp_path, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 2 and "/bin/sh is not darknet" in done.stderr


# --- how it is run -------------------------------------------------------------------------


def test_the_probe_runs_it_alone_in_a_throwaway_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = tmp_path / "seen.json"
    monkeypatch.setenv("PROBE_SEEN", str(seen))
    exe = tmp_path / "darknet"
    exe.write_text(
        f"#!{sys.executable}\n# darknet\nimport json, os, sys\n"
        "json.dump({'argv': sys.argv[1:], 'sid': os.getsid(0), 'pid': os.getpid(),"
        " 'cwd': os.getcwd(), 'stdin': sys.stdin.read()}, open(os.environ['PROBE_SEEN'], 'w'))\n"
        "print(f'usage: {sys.argv[0]} <function>', file=sys.stderr)\n"
    )
    exe.chmod(0o755)
    probe_binary(str(exe))
    got = json.loads(seen.read_text())
    assert got["argv"] == [] and got["stdin"] == ""  # no argument; stdin is /dev/null
    assert got["sid"] == got["pid"] != os.getsid(0)  # its own session, so it can be killed
    assert got["cwd"] != os.getcwd() and not Path(got["cwd"]).exists()


def test_a_binary_that_hangs_is_killed_with_its_children(tmp_path: Path) -> None:
    child = tmp_path / "child.pid"
    exe = script(tmp_path / "darknet", f"sleep 60 & echo $! > {child}\nsleep 60")
    started = time.monotonic()
    with pytest.raises(BinaryError, match=r"still running after 0\.5 s"):
        probe_binary(exe, timeout=0.5)
    assert time.monotonic() - started < 5
    pid = int(child.read_text())
    deadline = time.monotonic() + 5
    while not gone(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert gone(pid)  # the whole session was killed, not only the leader


def gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except OSError:
        return True


def test_endless_output_is_cut_at_the_cap(tmp_path: Path) -> None:
    exe = script(tmp_path / "darknet", "yes 'darknet, darknet'")
    started = time.monotonic()
    with pytest.raises(BinaryError, match="is not darknet"):
        probe_binary(exe)
    assert time.monotonic() - started < 5  # read 64 KiB, killed: no wait for the timeout


# --- the flavour ---------------------------------------------------------------------------


def test_the_forks_are_told_apart(tmp_path: Path) -> None:
    alexeyab = probe_binary(str(STANDIN))
    assert (alexeyab.flavour, alexeyab.decisive, alexeyab.cuda) == ("alexeyab", True, False)
    hankai = probe_binary(script(tmp_path / "hank" / "darknet", HANKAI_USAGE))
    assert hankai.flavour == "hankai" and hankai.usage == 'Darknet V5 "Moonlit" v5.0-135-g9b2c1f8'
    wrapper = probe_binary(usage_script(tmp_path / "wrap" / "darknet"))
    assert wrapper.flavour == "pjreddie" and not wrapper.decisive  # a script: only a guess


def test_a_cuda_build_is_recognised(tmp_path: Path) -> None:
    exe = usage_script(tmp_path / "darknet", text="darknet dont_show libcudart.so.12")
    assert probe_binary(exe).cuda


@pytest.mark.darknet
def test_a_written_flavour_must_be_the_one_found(darknet_bin: str) -> None:
    assert verify_binary(darknet_bin, "pjreddie").flavour == "pjreddie"
    for wrong in ("alexeyab", "hankai"):
        with pytest.raises(BinaryError, match=f"flavour {wrong} was written") as err:
            verify_binary(darknet_bin, wrong)
        assert err.value.key == "darknet.flavour" and "flavour: pjreddie" in str(err.value)


def test_a_written_flavour_against_a_fork(tmp_path: Path) -> None:
    with pytest.raises(BinaryError, match="is alexeyab darknet"):
        verify_binary(str(STANDIN), "pjreddie")
    # A wrapper script shows no flags of its own: what is written is believed.
    assert verify_binary(usage_script(tmp_path / "darknet"), "alexeyab").flavour == "alexeyab"


# --- the cache -----------------------------------------------------------------------------


def test_probes_are_cached_per_path_size_and_mtime(tmp_path: Path, fresh_cache: Path) -> None:
    runs = tmp_path / "runs"
    exe = usage_script(tmp_path / "darknet", extra=f"echo x >> {runs}")
    first = probe_binary(exe)
    assert probe_binary(exe) == first and runs.read_text() == "x\n"
    binary._MEMORY.clear()  # a new process: the file cache answers
    assert probe_binary(exe) == first and runs.read_text() == "x\n"
    entry = json.loads(fresh_cache.read_text())["binaries"][exe]
    assert entry["probe"]["flavour"] == "pjreddie"
    Path(exe).write_text(Path(exe).read_text() + "# changed\n")
    probe_binary(exe)
    assert runs.read_text() == "x\nx\n"


def test_a_damaged_cache_is_a_miss(tmp_path: Path, fresh_cache: Path) -> None:
    exe = usage_script(tmp_path / "darknet")
    fresh_cache.parent.mkdir(parents=True)
    wrong_entry = json.dumps({"version": 1, "binaries": {exe: {"stamp": 1}}})
    for junk in ("{not json", wrong_entry, "[]"):
        fresh_cache.write_text(junk)
        binary._MEMORY.clear()
        assert probe_binary(exe).flavour == "pjreddie"


def test_a_refusal_is_not_cached(tmp_path: Path) -> None:
    exe = script(tmp_path / "darknet", "echo nope")
    with pytest.raises(BinaryError):
        probe_binary(exe)
    Path(exe).write_text('#!/bin/sh\n# darknet\necho "usage: $0 <function>" >&2\n')
    assert probe_binary(exe).flavour == "pjreddie"


# --- check: every flavour-dependent setting against the flavour found ----------------------


@pytest.mark.darknet
def test_check_uses_the_flavour_found_under_auto(tmp_path: Path, darknet_bin: str) -> None:
    spec = spec_of(tmp_path, "  extra_args: [-mjpeg_port, '8090']\n")
    result = check_binary(spec)
    assert [key for key, _ in result.problems] == ["darknet.extra_args.0"]
    assert "not allowed for pjreddie" in result.problems[0][1] and result.argv is None
    spec = spec_of(tmp_path, "  flavour: alexeyab\n")
    [(key, message)] = check_binary(spec).problems
    assert key == "darknet.flavour" and "is pjreddie darknet" in message
    # The dataset's label rule follows the binary, not the contradicted flavour.
    assert job_flavour(spec) == "pjreddie"


def test_check_under_auto_with_the_alexeyab_standin(tmp_path: Path) -> None:
    spec = spec_of(tmp_path, f"  binary: {STANDIN}\n  extra_args: [-mjpeg_port, '8090']\n")
    result = check_binary(spec)
    assert result.ok and result.argv is not None
    assert result.argv[0] == str(STANDIN)
    assert result.argv[5:] == ("-dont_show", "-map", "-gpus", "0", "-mjpeg_port", "8090")
    assert job_flavour(spec) == "alexeyab"


def test_check_refuses_cpu_on_a_cuda_build(tmp_path: Path) -> None:
    exe = usage_script(tmp_path / "bin" / "darknet", text="darknet cudaSetDevice")
    cpu = spec_of(tmp_path, f"  binary: {exe}\n  gpus: []\n")
    [(key, message)] = check_binary(cpu).problems
    assert key == "darknet.gpus" and "cudaSetDevice(-1)" in message
    assert check_binary(spec_of(tmp_path, f"  binary: {exe}\n  gpus: [0]\n")).ok


def test_hostile_extra_args_are_refused_when_the_file_is_read(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="not a `detector train` flag of any darknet flavour"):
        spec_of(tmp_path, "  extra_args: ['; rm -rf /']\n")


def test_check_json_reports_the_binary_with_the_dataset(tmp_path: Path) -> None:
    path = tmp_path / "job.yaml"
    path.write_text(job(tmp_path, "  binary: rm\n"))
    done = subprocess.run(
        [sys.executable, "-m", "supervisor.cli", "check", "--json", str(path)],
        capture_output=True, text=True, cwd=ROOT, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    out = json.loads(done.stdout)
    assert out["findings"][0]["code"] == "job_binary"
    errors = [f for f in out["findings"] if f["severity"] == "error"]
    assert out["summary"]["findings"]["error"] == len(errors) > 1  # the empty .data file too


@pytest.mark.darknet
def test_evaluate_refuses_a_flavour_the_binary_contradicts(tmp_path: Path) -> None:
    for name in ("obj.data", "yolo.cfg", "w.weights"):
        (tmp_path / name).write_text("x")
    done = subprocess.run(
        [sys.executable, "-m", "supervisor.cli", "evaluate", "--data", "obj.data", "--cfg",
         "yolo.cfg", "--flavour", "hankai", "w.weights"],
        capture_output=True, text=True, cwd=tmp_path, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 2 and "flavour hankai was written" in done.stderr
