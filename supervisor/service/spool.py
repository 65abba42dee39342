"""The spool dir: YAML job files dropped into `<state>/inbox/` are submitted as if by
`trainsup submit`. Each is moved to `<state>/accepted/` (job created) or to `<state>/rejected/`
beside `<file>.error`, which says why exactly as `trainsup submit` would.

Writers should create the file elsewhere (or as a dot-file) and rename it into the inbox; a file
changed in the last second is left for the next pass in case it is still being written.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import structlog

from supervisor.service.admission import Refused
from supervisor.spec.yamlsource import SpecError, read_text

log = structlog.get_logger("trainsup.spool")

SUFFIXES = (".yaml", ".yml")
SETTLE_S = 1.0

Submit = Callable[..., Awaitable[int]]


class Spool:
    def __init__(self, state_dir: Path, submit: Submit) -> None:
        self.inbox = state_dir / "inbox"
        self.accepted = state_dir / "accepted"
        self.rejected = state_dir / "rejected"
        for d in (self.inbox, self.accepted, self.rejected):
            d.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(PermissionError):
            # The service's group may drop files in (setgid: they stay in the group; sticky:
            # no one removes another's file before the daemon takes it).
            os.chmod(self.inbox, 0o3770)
        self.submit = submit

    async def scan(self) -> None:
        now = time.time()
        for path in sorted(self.inbox.iterdir()):
            if path.name.startswith(".") or path.suffix not in SUFFIXES or not path.is_file():
                continue
            try:
                if now - path.stat().st_mtime < SETTLE_S:
                    continue
            except FileNotFoundError:
                continue
            await self._take(path)

    async def _take(self, path: Path) -> None:
        source = str(path)
        try:
            text = read_text(path)
            job_id = await self.submit(text, source, self.inbox, user=_owner(path))
        except Refused as e:
            self._reject(path, "\n".join(e.reasons))
        except SpecError as e:
            self._reject(path, str(e))
        except Exception as e:  # a spooled file must never stop the daemon
            log.exception("spool file failed", file=source)
            self._reject(path, f"internal error: {type(e).__name__}: {e}")
        else:
            dest = _free(self.accepted / path.name, job_id)
            path.rename(dest)
            log.info("spool accepted", file=source, job_id=job_id, moved_to=str(dest))

    def _reject(self, path: Path, why: str) -> None:
        dest = _free(self.rejected / path.name, int(time.time()))
        path.rename(dest)
        dest.with_name(dest.name + ".error").write_text(why.rstrip() + "\n")
        log.info("spool rejected", file=str(path), moved_to=str(dest))


def _free(dest: Path, tag: Any) -> Path:
    """`dest`, or `<stem>.<tag><suffix>` when a file of that name is there already."""
    if not dest.exists():
        return dest
    return dest.with_name(f"{dest.stem}.{tag}{dest.suffix}")


def _owner(path: Path) -> str | None:
    import pwd

    try:
        return pwd.getpwuid(path.stat().st_uid).pw_name
    except (KeyError, OSError):
        return None
