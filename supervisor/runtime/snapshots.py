"""`snapshots/` and `kept/` of a job dir: copies of completed saves, their metadata, retention.

darknet overwrites `_last`/`.backup` every 100 iterations and `_best` on every new best, so a
save the supervisor may want later (to score it, to keep it as best) is copied out of `backup/`
into `snapshots/<iteration>.weights` with a `<iteration>.json` beside it. A copy is accepted
only when it has the network's full size and its header says the iteration it is filed under:
anything else is a file darknet was still writing, or already overwriting with a later save.
The copy of a 245 MB file runs in a worker thread: the event loop is shared (the daemon).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from supervisor.atomicio import write_json_atomic
from supervisor.darknet.weights import WeightsError, read_weights_header
from supervisor.training.retention import RetentionPlan, Snapshot


class SnapshotError(Exception):
    """A save could not be copied as a complete snapshot of its iteration; says why."""


@dataclass
class SnapshotStore:
    """The `snapshots/` folder of one job.

    Attributes:
        root: `<job>/snapshots`.
        batch, subdivisions: the cfg's, to read the iteration from a header.
        expected_size: bytes of a complete save of this network; None until known (then the
            first save proven complete by darknet moving on sets it).
    """

    root: Path
    batch: int
    subdivisions: int
    expected_size: int | None = None

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self._locks: dict[int, asyncio.Lock] = {}

    def path(self, iteration: int) -> Path:
        return self.root / f"{iteration}.weights"

    def has(self, iteration: int) -> bool:
        return self.path(iteration).exists()

    def iterations(self) -> list[int]:
        return sorted(int(p.stem) for p in self.root.glob("*.weights") if p.stem.isdigit())

    async def take(self, src: Path, iteration: int) -> Path:
        """Copy the save `src` of `iteration` (already complete) to `snapshots/`."""
        dest = self.path(iteration)
        # One copy per iteration at a time: the `last` save and `_final` can be the same one.
        async with self._locks.setdefault(iteration, asyncio.Lock()):
            if dest.exists():
                return dest
            return await asyncio.to_thread(self._copy, src, iteration, dest)

    def _copy(self, src: Path, iteration: int, dest: Path) -> Path:
        tmp = dest.with_name(f".{dest.name}.tmp")
        try:
            shutil.copyfile(src, tmp)
            size = tmp.stat().st_size
            header = read_weights_header(tmp)
        except (OSError, WeightsError) as e:
            tmp.unlink(missing_ok=True)
            raise SnapshotError(str(e)) from None
        if self.expected_size is not None and size != self.expected_size:
            tmp.unlink(missing_ok=True)
            raise SnapshotError(
                f"{src.name} has {size} bytes, a complete save of this network has "
                f"{self.expected_size}: darknet was still writing it"
            )
        seen_it = header.iteration(self.batch, self.subdivisions)
        if seen_it != iteration:
            # darknet was already overwriting the file with a later save: not this iteration.
            tmp.unlink(missing_ok=True)
            raise SnapshotError(f"{src.name}: header says iteration {seen_it}, not {iteration}")
        os.replace(tmp, dest)
        return dest

    def meta(self, iteration: int) -> dict[str, Any]:
        try:
            data = json.loads((self.root / f"{iteration}.json").read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def update_meta(self, iteration: int, fields: Mapping[str, Any]) -> None:
        meta = self.meta(iteration)
        meta.update(fields)
        write_json_atomic(self.root / f"{iteration}.json", meta)

    def apply(self, plan: RetentionPlan, kept_dir: Path) -> dict[str, dict[str, Any]]:
        """Hard-link what each role keeps into `kept/`, then prune the rest of `snapshots/`."""
        kept_dir.mkdir(parents=True, exist_ok=True)
        roles: list[tuple[str, Snapshot]] = []
        if plan.best:
            roles.append(("best", plan.best))
        if plan.last:
            roles.append(("last", plan.last))
        roles += [(f"top{k + 1}", s) for k, s in enumerate(plan.top)]
        kept: dict[str, dict[str, Any]] = {}
        for role, s in roles:
            src = self.path(s.iteration)
            if not src.exists():
                continue
            dest = kept_dir / f"{role}.weights"
            tmp = kept_dir / f".{role}.weights.tmp"
            tmp.unlink(missing_ok=True)
            os.link(src, tmp)
            os.replace(tmp, dest)  # never a moment without a kept best
            write_json_atomic(kept_dir / f"{role}.json", {**self.meta(s.iteration), "role": role})
            kept[role] = {"path": str(dest), "iteration": s.iteration, "map": s.map}
        for it in plan.prune:
            self.path(it).unlink(missing_ok=True)
        return kept
