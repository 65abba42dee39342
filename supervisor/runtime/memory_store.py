"""Where the memory model lives between jobs: one JSON file.

- `trainsup run`: `$XDG_STATE_HOME/trainsup/memory.json` (`~/.local/state/…` without it).
- the daemon: `<state dir>/memory.json` (`MemoryStore.in_state_dir`), the same format. Not a
  SQLite table: the model is small (one entry per setting ever tried), read whole before a
  pick and rewritten whole after an observation, and one format means a model learned by
  `trainsup run` can be copied to a daemon's state dir (or back) as it is.

Writes are atomic (temp + rename) under an advisory lock (`memory.json.lock`, flock), and an
update merges into what is on disk at that moment: two `trainsup run` jobs ending together
both keep their observations. A corrupt or unreadable file is moved aside
(`memory.json.corrupt`) with a warning and the model starts empty: a broken cache must never
stop a training.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import structlog

from supervisor.atomicio import write_json_atomic
from supervisor.darknet.cfg import Cfg
from supervisor.runtime.gpu import GpuBackend
from supervisor.training.memory_model import (
    Entry,
    KeyFacts,
    MemoryModel,
    Pick,
    cfg_fingerprint,
    largest_size,
    pick_subdivisions,
)

FILE = "memory.json"

log = structlog.get_logger("trainsup.memory")


def user_path(env: Mapping[str, str] | None = None) -> Path:
    """`$XDG_STATE_HOME/trainsup/memory.json`, the model of `trainsup run`."""
    env = os.environ if env is None else env
    state = env.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "trainsup" / FILE


class MemoryStore:
    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else user_path()

    @classmethod
    def in_state_dir(cls, state_dir: str | Path) -> MemoryStore:
        """The daemon's model, beside its database."""
        return cls(Path(state_dir) / FILE)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_name(self.path.name + ".lock"), "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def load(self) -> MemoryModel:
        """The model on disk; empty when there is none yet or it is unreadable."""
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return MemoryModel()
        except OSError as e:
            log.warning(
                "memory model unreadable: starting empty", path=str(self.path), error=str(e)
            )
            return MemoryModel()
        try:
            return MemoryModel.from_json(json.loads(text))
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            aside = self.path.with_name(self.path.name + ".corrupt")
            with contextlib.suppress(OSError):
                os.replace(self.path, aside)
            log.warning(
                "memory model corrupt: moved aside, starting empty",
                path=str(self.path),
                moved_to=str(aside),
                error=str(e),
            )
            return MemoryModel()

    def update(self, change: Callable[[MemoryModel], MemoryModel]) -> MemoryModel:
        """Apply `change` to the model as it is on disk now and save the result."""
        with self._locked():
            model = change(self.load())
            write_json_atomic(self.path, model.to_json())
            return model

    def observe(self, *entries: Entry) -> MemoryModel:
        """Record observations (`memory_model.peak(…)`, `memory_model.oom(…)`)."""

        def add(m: MemoryModel) -> MemoryModel:
            for e in entries:
                m = m.observe(e)
            return m

        return self.update(add)


# --- the model asked about a job, with the GPU as it is now ----------------------------------


def launch_facts(cfg: Cfg, gpu_model: str, *, map_on: bool, flavour: str) -> KeyFacts:
    """The model's key for a launch of `cfg` (its mini-batch aside): the network's fingerprint
    and the largest size the launch reaches (`random=1` resizes up, darknet-facts §6)."""
    random = any(layer.random for layer in cfg.detection_layers())
    w, h = largest_size(cfg.width, cfg.height, random=random, flavour=flavour)
    return KeyFacts(gpu_model, cfg_fingerprint(cfg), w, h, map_on)


def pick_for(
    model: MemoryModel,
    backend: GpuBackend,
    cfg: Cfg,
    gpus: list[int],
    *,
    map_on: bool,
    flavour: str,
    headroom: float = 0.1,
    tune: bool = False,
) -> Pick | None:
    """`pick_subdivisions` for `cfg` on the job's GPUs as they are now (the least free memory
    among them: each holds a whole copy of the network); None on the CPU or without a reading
    of those GPUs. For the runner before a launch and the daemon before it starts a job."""
    devices = [d for d in backend.devices() if d.index in gpus]
    known = [d for d in devices if d.free_mib is not None]
    if not gpus or not known or len(known) < len(set(gpus)):
        return None
    tightest = min(known, key=lambda d: d.free_mib or 0.0)
    assert tightest.free_mib is not None
    facts = launch_facts(cfg, tightest.name, map_on=map_on, flavour=flavour)
    return pick_subdivisions(
        model, facts, cfg.batch, cfg.subdivisions, tightest.free_mib, headroom, tune=tune
    )
