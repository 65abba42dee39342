"""Write a job dir's own copies of the user's `.cfg` and `.data` (DESIGN "The job dir").

darknet runs in `<job>/run/`, so every path in the copies is absolute, and its saves and
`detector valid` results go inside the job (`backup=`, `results=`); the cfg copy keeps the
user's file name, because darknet names the weights after it (facts §4).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from supervisor.darknet.cfg import Cfg, CfgChanges, CfgError, DataFile, Option, cfg_base


@dataclass(frozen=True, slots=True)
class JobFiles:
    """Paths of a prepared job dir (DESIGN "The job dir")."""

    job_dir: Path
    base: str
    cfg: Path
    data: Path
    backup: Path
    results: Path
    run: Path
    train: Path
    valid: Path | None
    names: Path | None


_DATA_PATH_KEYS = ("train", "valid", "names")


def prepare_job_files(
    job_dir: str | Path,
    data_path: str | Path,
    cfg_path: str | Path,
    *,
    cfg_changes: CfgChanges | None = None,
    search_dirs: Sequence[str | Path] = (),
    overwrite: bool = False,
) -> JobFiles:
    """Write `<job>/<base>.cfg` and `<job>/job.data` and create backup/, results/, run/.

    Relative train/valid/names paths in the .data are resolved against the .data file's
    directory first, then each of `search_dirs` (e.g. the darknet checkout, which is what
    darknet itself would use as its working directory); the first that exists wins. Both
    copies are written in the form every flavour reads (LF, no BOM).
    """
    job = Path(job_dir).absolute()
    data_src = Path(data_path).absolute()
    base = cfg_base(cfg_path)
    cfg = Cfg.load(cfg_path)
    if cfg_changes:
        cfg.apply(cfg_changes)
    data = DataFile.load(data_src)

    resolved: dict[str, Path] = {}
    for key in _DATA_PATH_KEYS:
        opt = data.get(key)
        if opt is None:
            if key == "train":
                raise CfgError(
                    data_src,
                    None,
                    "the .data file has no train= line",
                    "add train = /path/to/train.txt (one image path per line)",
                )
            continue
        resolved[key] = _resolve(opt, data_src, [Path(d) for d in search_dirs])

    backup, results, run = job / "backup", job / "results", job / "run"
    for p in (job, *resolved.values()):
        _check_no_whitespace(p, data_src)
    for key, p in resolved.items():
        data.set(key, str(p))
    data.set("backup", str(backup))
    data.set("results", str(results))

    cfg_out, data_out = job / f"{base}.cfg", job / "job.data"
    if not overwrite:
        for p in (cfg_out, data_out):
            if p.exists():
                raise FileExistsError(
                    f"{p} already exists: this job dir was prepared before. Resume it with its "
                    "own copies (they may hold earlier fixes such as a raised subdivisions), "
                    "or use a new job dir."
                )
    for d in (job, backup, results, run):
        d.mkdir(parents=True, exist_ok=True)
    cfg.save(cfg_out, darknet_form=True)
    data.save(data_out, darknet_form=True)
    return JobFiles(
        job_dir=job,
        base=base,
        cfg=cfg_out,
        data=data_out,
        backup=backup,
        results=results,
        run=run,
        train=resolved["train"],
        valid=resolved.get("valid"),
        names=resolved.get("names"),
    )


def _resolve(opt: Option, data_src: Path, search_dirs: Iterable[Path]) -> Path:
    given = Path(opt.value)
    if given.is_absolute():
        if given.exists():
            return given
        raise CfgError(
            data_src,
            opt.line,
            f"{opt.key} = {opt.value} does not exist",
            "fix the path or create the file",
        )
    tried = [data_src.parent / given, *(Path(d).absolute() / given for d in search_dirs)]
    for candidate in tried:
        if candidate.exists():
            return candidate
    listed = ", ".join(str(c) for c in tried)
    raise CfgError(
        data_src,
        opt.line,
        f"{opt.key} = {opt.value} is a relative path and was not found (tried {listed})",
        "write an absolute path, or a path relative to the .data file's folder",
    )


def _check_no_whitespace(path: Path, data_src: Path) -> None:
    # darknet's strip() deletes these characters from every .data line.
    if any(c in " \t\r\n" for c in str(path)):
        raise CfgError(
            data_src,
            None,
            f"{path} contains whitespace; darknet deletes every space from .data lines, so it "
            "would look for a different path",
            "use a path without spaces (rename the folder, or point at a symlink without spaces)",
        )


def existing_job_files(job_dir: str | Path, cfg_path: str | Path) -> JobFiles:
    """The `JobFiles` of a job dir prepared before (`--attach`, the daemon's re-adoption):
    read from its own copies, which may hold changes made since (a raised subdivisions)."""
    job = Path(job_dir).absolute()
    base = cfg_base(cfg_path)
    cfg_out, data_out = job / f"{base}.cfg", job / "job.data"
    for p in (cfg_out, data_out):
        if not p.is_file():
            raise FileNotFoundError(
                f"{p} is missing: {job} is not a prepared job dir (nothing to attach to)"
            )
    data = DataFile.load(data_out)

    def path(key: str) -> Path | None:
        opt = data.get(key)
        return Path(opt.value) if opt is not None else None

    train = path("train")
    if train is None:
        raise CfgError(data_out, None, "the job's .data copy has no train= line", "")
    return JobFiles(
        job_dir=job,
        base=base,
        cfg=cfg_out,
        data=data_out,
        backup=job / "backup",
        results=job / "results",
        run=job / "run",
        train=train,
        valid=path("valid"),
        names=path("names"),
    )
