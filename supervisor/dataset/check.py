"""Dataset pre-flight check: everything that breaks or misleads a training, before it starts.

`check_dataset(data, cfg)` reads the `.data` file, its image lists, every image and the label
file darknet would open for it (by the flavour's own rule), and the `.cfg`, and returns a
`CheckReport`: a summary of the dataset and a list of `Finding`s, each with a stable code,
file, line, message and fix. `render.format_report` renders it for people, `to_json` for machines
(schema: docs/dataset-check.md). Per-file work runs in parallel processes and is cached by
(path, size, mtime_ns), so re-checking an unchanged dataset only stats its files. The fast
check (`decode=False`) reads image headers instead of decoding pixels.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from supervisor.dataset.cache import open_cache
from supervisor.dataset.config_checks import DataInfo, check_cfg, check_data_file
from supervisor.dataset.entries import entry_findings, image_set_findings
from supervisor.dataset.findings import SEVERITIES, Finding, Severity, finding
from supervisor.dataset.images import ImageFacts
from supervisor.dataset.labels_check import LabelFacts, label_findings
from supervisor.dataset.lists import Entry, read_list
from supervisor.dataset.scan import ScanResult, scan
from supervisor.dataset.splits import SplitCounts, balance_findings, overlap_findings
from supervisor.training.events import Flavour

__all__ = [
    "CheckReport",
    "Finding",
    "SplitSummary",
    "Summary",
    "check_dataset",
]


@dataclass(frozen=True)
class SplitSummary:
    name: str  # "train" | "valid"
    list_file: str
    images: int  # distinct images listed (blank lines excluded)
    missing: int  # of those, not found on disk
    labelled: int  # images whose label file exists
    negatives: int  # images whose label file exists and holds no box
    objects: int  # boxes with a valid class id
    objects_per_class: tuple[int, ...]

    @property
    def negatives_ratio(self) -> float:
        return self.negatives / self.labelled if self.labelled else 0.0

    def to_json(self, names: Sequence[str]) -> dict[str, Any]:
        return {
            "list": self.list_file,
            "images": self.images,
            "missing": self.missing,
            "labelled": self.labelled,
            "negatives": self.negatives,
            "negatives_ratio": round(self.negatives_ratio, 4),
            "objects": self.objects,
            "objects_per_class": _per_class(self.objects_per_class, names),
        }

    @classmethod
    def from_json(cls, name: str, d: dict[str, Any]) -> SplitSummary:
        return cls(
            name=name,
            list_file=str(d["list"]),
            images=int(d["images"]),
            missing=int(d["missing"]),
            labelled=int(d["labelled"]),
            negatives=int(d["negatives"]),
            objects=int(d["objects"]),
            objects_per_class=tuple(int(n) for n in d["objects_per_class"].values()),
        )


@dataclass(frozen=True)
class Summary:
    data: str
    cfg: str | None
    flavour: Flavour
    classes: int | None
    names: tuple[str, ...]
    splits: tuple[SplitSummary, ...]
    image_sizes: tuple[tuple[int, int, int], ...]  # (width, height, images), most common first
    image_modes: tuple[tuple[str, int], ...]  # (Pillow mode, images), most common first
    files_checked: int  # distinct images
    from_cache: int  # of those, answered from the cache
    workers: int  # processes that inspected files (0: all from the cache)
    seconds: float
    decode: bool = True  # False: a fast check, image headers only (no pixels decoded)

    @property
    def images(self) -> int:
        return sum(s.images for s in self.splits)

    def objects_per_class(self) -> tuple[int, ...]:
        n = max((len(s.objects_per_class) for s in self.splits), default=0)
        return tuple(sum(s.objects_per_class[i] for s in self.splits) for i in range(n))

    def to_json(self) -> dict[str, Any]:
        return {
            "data": self.data,
            "cfg": self.cfg,
            "flavour": self.flavour,
            "classes": self.classes,
            "names": list(self.names),
            "images": self.images,
            "objects_per_class": _per_class(self.objects_per_class(), self.names),
            "splits": {s.name: s.to_json(self.names) for s in self.splits},
            "image_sizes": [{"width": w, "height": h, "images": n} for w, h, n in self.image_sizes],
            "image_modes": dict(self.image_modes),
            "checked": {
                "images": self.files_checked,
                "from_cache": self.from_cache,
                "workers": self.workers,
                "seconds": round(self.seconds, 3),
                "decode": self.decode,
            },
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Summary:
        checked = d["checked"]
        return cls(
            data=str(d["data"]),
            cfg=None if d["cfg"] is None else str(d["cfg"]),
            flavour=d["flavour"],
            classes=None if d["classes"] is None else int(d["classes"]),
            names=tuple(str(n) for n in d["names"]),
            splits=tuple(SplitSummary.from_json(k, v) for k, v in d["splits"].items()),
            image_sizes=tuple(
                (int(s["width"]), int(s["height"]), int(s["images"])) for s in d["image_sizes"]
            ),
            image_modes=tuple((str(m), int(n)) for m, n in d["image_modes"].items()),
            files_checked=int(checked["images"]),
            from_cache=int(checked["from_cache"]),
            workers=int(checked["workers"]),
            seconds=float(checked["seconds"]),
            decode=bool(checked["decode"]),
        )


def _per_class(counts: Sequence[int], names: Sequence[str]) -> dict[str, int]:
    return {(names[i] if i < len(names) else str(i)): n for i, n in enumerate(counts)}


@dataclass(frozen=True)
class CheckReport:
    summary: Summary
    findings: tuple[Finding, ...]

    def count(self, severity: Severity) -> int:
        return sum(1 for f in self.findings if f.severity == severity)

    def to_json(self) -> dict[str, Any]:
        summary = self.summary.to_json()
        summary["findings"] = {s: self.count(s) for s in SEVERITIES}
        return {"summary": summary, "findings": [f.to_json() for f in self.findings]}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> CheckReport:
        """The report `to_json` wrote (e.g. the daemon's copy, kept from submit to start).
        Round-trips but for the rounding of the ratios and seconds, and per-class counts of
        classes that share a name (keyed by name in the JSON). KeyError, TypeError or
        ValueError when `d` is not such a report."""
        findings = tuple(
            Finding(
                severity=f["severity"],
                code=str(f["code"]),
                file=f["file"],
                line=f["line"],
                message=str(f["message"]),
                fix=str(f["fix"]),
            )
            for f in d["findings"]
        )
        bad = {f.severity for f in findings} - set(SEVERITIES)
        if bad:
            raise ValueError(f"unknown finding severity {sorted(bad)[0]!r}")
        return cls(Summary.from_json(d["summary"]), findings)

    def exit_status(self, strict: bool = False) -> int:
        """2 with any error; 1 with warnings when `strict`; else 0 (notes never count)."""
        if self.count("error"):
            return 2
        if strict and self.count("warning"):
            return 1
        return 0


def check_dataset(
    data: Path,
    cfg: Path | None,
    *,
    flavour: Flavour = "pjreddie",
    workers: int | None = None,
    cache_dir: Path | None = None,
    progress: Callable[[int, int], None] | None = None,
    managed_backup: bool = False,
    decode: bool = True,
) -> CheckReport:
    """Check the dataset of `data` (and `cfg` against it) as darknet of `flavour` reads it.

    `workers`: processes for the per-file work (default: all CPUs). `cache_dir`: where the
    fact cache lives (default `$XDG_CACHE_HOME/trainsup`). `progress(done, total)` is called
    as images are checked. `managed_backup`: skip the backup-folder checks, for a job whose
    backup= trainsup sets itself (its job dir). `decode=False` is the fast check: image
    headers only, no pixels decoded; everything else runs, except the near-duplicate search
    (a note says so) unless every image's hashes are already in the cache from a full check.
    """
    started = time.perf_counter()
    data = Path(data)
    info, findings = check_data_file(data, flavour, managed_backup=managed_backup)
    entries: list[Entry] = []
    for split, lst in (("train", info.train), ("valid", info.valid)):
        if lst is not None:
            found, about = read_list(lst, split, info.base, flavour)
            entries.extend(found)
            findings.extend(about)

    pairs: dict[str, str | None] = {}
    for e in entries:
        if e.image and e.image not in pairs:
            pairs[e.image] = e.label
    cache, cache_problem = open_cache(cache_dir)
    if cache_problem is not None:
        findings.append(
            finding(
                "cache_unavailable",
                None,
                None,
                f"the check cache cannot be used ({cache_problem}); every image was inspected "
                "afresh",
                "pass a writable cache folder, or set XDG_CACHE_HOME",
            )
        )
    try:
        scanned = scan(
            list(pairs.items()), workers=workers, cache=cache, progress=progress, decode=decode
        )
    finally:
        if cache is not None:
            cache.close()

    findings.extend(entry_findings(entries, scanned, flavour))
    counts, split_summaries = _split_counts(entries, scanned, info, findings)
    inspected = {p: f for p, f in scanned.images.items() if isinstance(f, ImageFacts)}
    # A fast check after a full one has every hash from the cache: search then, as in full.
    hashed = all(f.decoded for f in inspected.values())
    split_findings, _ = overlap_findings([e for e in entries if e.image], inspected, hashed)
    findings.extend(split_findings)
    names = info.names or tuple(str(i) for i in range(info.classes or 0))
    findings.extend(
        balance_findings(
            counts,
            names,
            str(info.valid) if info.valid else None,
            str(info.train) if info.train else None,
        )
    )
    sizes, modes = _image_stats(inspected)
    findings.extend(image_set_findings(inspected, sizes))
    if cfg is not None:
        train_images = counts["train"].images if "train" in counts else 0
        findings.extend(check_cfg(Path(cfg), info.classes, train_images, flavour=flavour))

    summary = Summary(
        data=str(data),
        cfg=str(cfg) if cfg is not None else None,
        flavour=flavour,
        classes=info.classes,
        names=info.names,
        splits=tuple(split_summaries),
        image_sizes=sizes,
        image_modes=modes,
        files_checked=len(pairs),
        from_cache=scanned.from_cache,
        workers=scanned.workers,
        seconds=time.perf_counter() - started,
        decode=decode,
    )
    return CheckReport(summary, tuple(sorted(findings, key=_order)))


_RANK = {s: i for i, s in enumerate(SEVERITIES)}


def _order(f: Finding) -> tuple[int, str, str, int]:
    return (_RANK[f.severity], f.code, f.file or "", f.line or 0)


def _split_counts(
    entries: list[Entry], scanned: ScanResult, info: DataInfo, findings: list[Finding]
) -> tuple[dict[str, SplitCounts], list[SplitSummary]]:
    """Label findings (once per label file) and the per-split totals."""
    n_classes = info.classes or 0
    per_label: dict[str, tuple[int, ...]] = {}
    for img, lbl in {(e.image, e.label) for e in entries if e.image and e.label}:
        lf = scanned.labels.get(lbl)
        im = scanned.images.get(img)
        # A missing image is reported as such; its label's problems would only add noise.
        if not isinstance(lf, LabelFacts) or lbl in per_label or im is None:
            continue
        w, h = (im.width, im.height) if isinstance(im, ImageFacts) and not im.problem else (0, 0)
        counts = [0] * n_classes
        findings.extend(label_findings(lf, lbl, info.classes, w, h, counts))
        per_label[lbl] = tuple(counts)

    result: dict[str, SplitCounts] = {}
    summaries: list[SplitSummary] = []
    for split, lst in (("train", info.train), ("valid", info.valid)):
        if lst is None:
            continue
        seen: set[str] = set()
        images = missing = labelled = negatives = 0
        objects = [0] * n_classes
        for e in entries:
            if e.split != split or not e.image or e.image in seen:
                continue
            seen.add(e.image)
            images += 1
            if scanned.images.get(e.image) is None:
                missing += 1
                continue
            lf = scanned.labels.get(e.label or "")
            if isinstance(lf, LabelFacts):
                labelled += 1
                if not lf.rows and not lf.bad and not lf.dups:
                    negatives += 1
                for i, n in enumerate(per_label.get(e.label or "", ())):
                    objects[i] += n
        found = images - missing
        result[split] = SplitCounts(found, negatives, tuple(objects))
        summaries.append(
            SplitSummary(
                split, str(lst), images, missing, labelled, negatives, sum(objects), tuple(objects)
            )
        )
    return result, summaries


def _image_stats(
    inspected: dict[str, ImageFacts],
) -> tuple[tuple[tuple[int, int, int], ...], tuple[tuple[str, int], ...]]:
    ok = [f for f in inspected.values() if f.problem is None]
    sizes = Counter((f.width, f.height) for f in ok).most_common()
    modes = Counter(f.mode or "?" for f in ok).most_common()
    return tuple((w, h, n) for (w, h), n in sizes), tuple(modes)
