"""What a dataset check reports: `Finding` and the registry of stable finding codes.

Every code has one severity, so a script can filter on `code` alone, with one exception the
issue asks for: `label_missing` is an error for pjreddie (training ends) and a warning for
AlexeyAB/hank-ai (the image becomes a silent negative). Severities mean:
- error: training breaks or is silently poisoned (it stops, learns wrong boxes or nothing);
- warning: training runs but its mAP misleads, or the data hurts what is learned;
- note: worth knowing, no action needed unless it surprises you.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

Severity = Literal["error", "warning", "note"]
SEVERITIES: tuple[Severity, ...] = ("error", "warning", "note")


@dataclass(frozen=True)
class Finding:
    """One problem: where (file, 1-based line or None), what is wrong, and how to fix it."""

    severity: Severity
    code: str
    file: str | None
    line: int | None
    message: str
    fix: str

    def to_json(self) -> dict[str, Any]:
        return {
            "severity": self.severity,
            "code": self.code,
            "file": self.file,
            "line": self.line,
            "message": self.message,
            "fix": self.fix,
        }


@dataclass(frozen=True)
class CodeInfo:
    severity: Severity
    title: str  # a short heading for the human report's group of this code


# fmt: off
CODES: dict[str, CodeInfo] = {
    # .data file
    "data_syntax": CodeInfo("error", ".data file cannot be read"),
    "data_key_missing": CodeInfo("error", ".data key missing"),
    "data_valid_missing": CodeInfo("warning", "no valid= list"),
    "list_missing": CodeInfo("error", "image list not found"),
    "names_missing": CodeInfo("error", "names file not found"),
    "names_count_mismatch": CodeInfo("error", "classes= differs from the names file"),
    "backup_missing": CodeInfo("error", "backup folder missing"),
    "backup_not_writable": CodeInfo("error", "backup folder not writable"),
    # .cfg file
    "cfg_syntax": CodeInfo("error", ".cfg file cannot be read"),
    "cfg_classes_mismatch": CodeInfo("error", "detection layer's classes= differs from the data"),
    "cfg_filters_mismatch": CodeInfo("error", "filters= before a detection layer is wrong"),
    "cfg_unknown_section": CodeInfo("error", "section darknet does not know"),
    "cfg_mask_out_of_range": CodeInfo("error", "mask= index not below num="),
    "cfg_anchors_mismatch": CodeInfo("error", "anchors= count is not 2 × num="),
    "cfg_subdivisions_above_batch": CodeInfo("error", "subdivisions larger than batch"),
    "cfg_size_invalid": CodeInfo("error", "width/height missing or not positive"),
    "cfg_value_not_a_number": CodeInfo("error", "[net] value is not a number"),
    "cfg_max_batches_missing": CodeInfo("error", "no max_batches (darknet trains 0 iterations)"),
    "cfg_policy_incomplete": CodeInfo("error", "policy=steps without matching steps/scales"),
    "cfg_policy_unknown": CodeInfo("warning", "unknown learning-rate policy"),
    "cfg_steps_not_increasing": CodeInfo("error", "steps= not increasing"),
    "batch_not_divisible": CodeInfo("warning", "batch not divisible by subdivisions"),
    "size_not_multiple_of_32": CodeInfo("warning", "width/height not a multiple of 32"),
    "max_batches_rule": CodeInfo("warning", "max_batches below the usual rule"),
    "steps_rule": CodeInfo("warning", "steps not at ~80 % / 90 % of max_batches"),
    # image lists
    "image_path_relative": CodeInfo("warning", "relative image paths in a list"),
    "list_crlf": CodeInfo("error", "image list with Windows line ends"),
    "image_listed_twice": CodeInfo("warning", "image listed twice"),
    # images
    "image_missing": CodeInfo("error", "listed image not found"),
    "image_empty": CodeInfo("error", "image file is empty"),
    "image_corrupt": CodeInfo("error", "image cannot be decoded"),
    "jpeg_truncated": CodeInfo("error", "JPEG cut short"),
    "image_too_large": CodeInfo("warning", "image too large to decode safely"),
    "image_too_small": CodeInfo("warning", "very small image"),
    "image_cmyk": CodeInfo("warning", "CMYK image"),
    "image_grayscale": CodeInfo("note", "grayscale image"),
    "mixed_resolutions": CodeInfo("note", "images of several sizes"),
    # labels
    "label_missing": CodeInfo("error", "label file missing"),
    "label_path_is_image": CodeInfo("error", "darknet would read the image as its label"),
    "label_bom": CodeInfo("error", "label file starts with a byte-order mark"),
    "label_columns": CodeInfo("error", "label line without 5 columns"),
    "label_class_not_integer": CodeInfo("error", "class id is not a whole number"),
    "label_not_a_number": CodeInfo("error", "coordinate is not a number"),
    "label_class_out_of_range": CodeInfo("error", "class id outside 0 … classes-1"),
    "label_not_normalized": CodeInfo("error", "coordinates above 1 (pixels?)"),
    "label_negative": CodeInfo("error", "negative coordinates"),
    "box_outside_image": CodeInfo("warning", "box reaches outside the image"),
    "box_too_small": CodeInfo("warning", "zero or near-zero box"),
    "label_duplicate_row": CodeInfo("warning", "same box twice"),
    "label_too_many_rows": CodeInfo("warning", "label file far longer than darknet reads"),
    # splits and balance
    "split_overlap_path": CodeInfo("warning", "image in both train and valid"),
    "split_overlap_content": CodeInfo("warning", "same picture in train and valid"),
    "near_duplicate_across_splits": CodeInfo("warning", "near-duplicate in train and valid"),
    "near_duplicates_skipped": CodeInfo("note", "near-duplicates not looked for (fast check)"),
    "duplicate_images": CodeInfo("warning", "identical images in one split"),
    "valid_too_small": CodeInfo("warning", "validation split too small"),
    "valid_class_too_few": CodeInfo("warning", "too few validation objects of a class"),
    "class_missing_in_valid": CodeInfo("warning", "class absent from valid"),
    "class_missing_in_train": CodeInfo("warning", "class absent from train"),
    "class_imbalance": CodeInfo("warning", "strong class imbalance"),
    "no_negatives": CodeInfo("note", "no negative images in train"),
    "cache_unavailable": CodeInfo("note", "check cache not used"),
}
# fmt: on


def finding(code: str, file: str | None, line: int | None, message: str, fix: str) -> Finding:
    """A `Finding` whose severity comes from the registry, so one code never changes severity."""
    return Finding(CODES[code].severity, code, file, line, message, fix)
