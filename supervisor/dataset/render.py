"""The human form of a dataset check report: summary, then findings grouped by severity and code.

Many findings of one code (5 000 missing label files) show as the first few and a count; the
JSON form keeps them all.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from supervisor.dataset.findings import CODES, SEVERITIES, Finding

if TYPE_CHECKING:
    from supervisor.dataset.check import CheckReport, Summary

SHOWN_PER_CODE = 5
_HEADINGS = {"error": "Errors", "warning": "Warnings", "note": "Notes"}
_VERDICT = {
    "error": "training would break or learn from wrong data: fix the errors first",
    "warning": "training can run, but its mAP may mislead: review the warnings",
    "note": "nothing blocks training",
}


def format_report(report: CheckReport) -> str:
    """The report as text for a terminal: summary, findings by severity, a closing verdict."""
    lines = _summary(report.summary)
    for severity in SEVERITIES:
        group = [f for f in report.findings if f.severity == severity]
        if not group:
            continue
        lines += ["", f"{_HEADINGS[severity]} ({len(group)})"]
        codes = list(dict.fromkeys(f.code for f in group))
        for code in codes:
            lines += _code_group(code, [f for f in group if f.code == code])
    counts = {s: report.count(s) for s in SEVERITIES}
    worst = next((s for s in SEVERITIES if counts[s]), "note")
    said = ", ".join(f"{counts[s]} {_plural(s, counts[s])}" for s in SEVERITIES)
    lines += ["", f"Result: {said}; {_VERDICT[worst]}."]
    return "\n".join(lines) + "\n"


def _plural(severity: str, n: int) -> str:
    return severity if n == 1 else severity + "s"


def _summary(s: Summary) -> list[str]:
    head = f"Dataset check of {s.data}"
    if s.cfg:
        head += f" with {s.cfg}"
    lines = [head + f" ({s.flavour} darknet)", ""]
    names = ", ".join(s.names) if s.names else "no names"
    rows: list[tuple[str, str]] = [("classes", f"{s.classes if s.classes else '?'} ({names})")]
    for sp in s.splits:
        missing = f", {sp.missing} missing" if sp.missing else ""
        rows.append(
            (
                sp.name,
                f"{sp.images} images{missing} · {sp.negatives} negatives "
                f"({sp.negatives_ratio:.1%} of labelled) · {sp.objects} objects · {sp.list_file}",
            )
        )
    per_class = s.objects_per_class()
    if per_class:
        parts = []
        for i, n in enumerate(per_class):
            name = s.names[i] if i < len(s.names) else str(i)
            by_split = ", ".join(
                f"{sp.name} {sp.objects_per_class[i]}"
                for sp in s.splits
                if i < len(sp.objects_per_class)
            )
            parts.append(f"{name} {n} ({by_split})")
        rows.append(("per class", " · ".join(parts)))
    if s.image_sizes:
        sizes = " · ".join(f"{w}×{h} ({n})" for w, h, n in s.image_sizes[:4])
        if len(s.image_sizes) > 4:
            sizes += f" · {len(s.image_sizes) - 4} more sizes"
        rows.append(("image sizes", sizes))
        rows.append(("image modes", " · ".join(f"{m} ({n})" for m, n in s.image_modes)))
    procs = f"{s.workers} process{'es' if s.workers != 1 else ''}" if s.workers else "no decoding"
    if not s.decode:
        procs += "; fast: headers only, no pixels decoded"
    rows.append(
        (
            "checked",
            f"{s.files_checked} images in {s.seconds:.2f} s ({s.from_cache} from cache, {procs})",
        )
    )
    width = max(len(k) for k, _ in rows)
    return lines + [f"  {k.ljust(width)}  {v}" for k, v in rows]


def _where(f: Finding) -> str:
    if f.file is None:
        return ""
    return f"{f.file}:{f.line}" if f.line is not None else f.file


def _code_group(code: str, group: Sequence[Finding]) -> list[str]:
    title = CODES[code].title if code in CODES else code
    count = f" ({len(group)})" if len(group) > 1 else ""
    lines = [f"  {code} — {title}{count}"]
    same_fix = len({f.fix for f in group}) == 1
    for f in group[:SHOWN_PER_CODE]:
        where = _where(f)
        lines.append(f"    {where}" if where else f"    {f.message}")
        if where:
            lines.append(f"      {f.message}")
        if not same_fix:
            lines.append(f"      fix: {f.fix}")
    if len(group) > SHOWN_PER_CODE:
        lines.append(f"    … and {len(group) - SHOWN_PER_CODE} more (all of them in --json)")
    if same_fix:
        lines.append(f"    fix: {group[0].fix}")
    return lines
