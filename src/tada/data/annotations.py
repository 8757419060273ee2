"""Annotation files: video lists, class names, Something-Something-V2 JSON, mirrored class pairs.

Every reader checks the whole file at start-up and fails with ``file:line`` (or the JSON entry
number) and the reason, instead of crashing a worker in the middle of an epoch (the official readers
report every error as "not found").
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tada.errors import TadaError
from tada.fileio import read_utf8_text

__all__ = [
    "AnnotationError",
    "VideoEntry",
    "read_video_list",
    "read_class_names",
    "read_ssv2_labels",
    "read_ssv2_split",
    "mirrored_pairs",
    "ssv2_template_key",
]


class AnnotationError(TadaError, ValueError):
    """An annotation file is missing or malformed; the message names the file and line or entry."""


@dataclass(frozen=True)
class VideoEntry:
    """One video of a split: its absolute path and integer label."""

    path: str
    label: int


def _check_label(where: str, label: int, num_classes: int | None) -> int:
    if num_classes is not None and not 0 <= label < num_classes:
        raise AnnotationError(f"{where}: label {label} outside [0, {num_classes}) (VIDEO.HEAD.NUM_CLASSES)")
    return label


def _require_file(path: Path, what: str) -> None:
    if not path.is_file():
        raise AnnotationError(f"{what} not found: {path}")


def _read_text(path: Path, what: str) -> str:
    """A UTF-8 annotation file's text (a byte-order mark dropped, so the first entry keeps its name)."""
    _require_file(path, what)
    try:
        return read_utf8_text(path, error=AnnotationError)
    except OSError as err:
        raise AnnotationError(f"cannot read the {what} {path}: {err.strerror or err}") from None


def _join(root: str, rel: str) -> str:
    return os.path.join(root, rel) if root else rel


_COMMENT = re.compile(r"(^|\s)#.*$")


def read_video_list(path: str | os.PathLike, *, root: str, num_classes: int | None,
                    class_names: Sequence[str] | None = None) -> list[VideoEntry]:
    """A list of ``relpath label`` lines (any whitespace, ``#`` comments, blank lines allowed) or a
    CSV file (``.csv``) with a header holding ``path`` and ``label`` columns.

    Paths are joined to ``root``. With ``class_names`` a label may also be a class name. A path
    containing spaces is allowed in the text format: the label is the last field.
    """
    path = Path(path)
    text_of_file = _read_text(path, "video list")
    names = {n: i for i, n in enumerate(class_names)} if class_names else {}

    def label_of(where: str, text: str) -> int:
        text = text.strip()
        if re.fullmatch(r"[+-]?\d+", text):
            return _check_label(where, int(text), num_classes)
        if text in names:
            return names[text]
        hint = " (not a class name either)" if names else " (give a class-name file to use names)"
        raise AnnotationError(f"{where}: label '{text}' is not an integer{hint}")

    entries: list[VideoEntry] = []
    if path.suffix.lower() == ".csv":
        with io.StringIO(text_of_file, newline="") as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            if header is None:
                raise AnnotationError(f"{path}: empty CSV file (expected a header with path,label)")
            cols = [h.strip().lower() for h in header]
            if "path" not in cols or "label" not in cols:
                raise AnnotationError(f"{path}:1: CSV header {header} needs 'path' and 'label' columns")
            ip, il = cols.index("path"), cols.index("label")
            for row in reader:
                where = f"{path}:{reader.line_num}"
                if not row or all(not c.strip() for c in row):
                    continue
                if len(row) != len(cols):
                    raise AnnotationError(f"{where}: {len(row)} fields, the header has {len(cols)}")
                rel = row[ip].strip()
                if not rel:
                    raise AnnotationError(f"{where}: empty path")
                entries.append(VideoEntry(_join(root, rel), label_of(where, row[il])))
    else:
        for lineno, line in enumerate(io.StringIO(text_of_file, newline=None), start=1):
            text = _COMMENT.sub("", line).strip()
            if not text:
                continue
            parts = text.rsplit(None, 1)
            where = f"{path}:{lineno}"
            if len(parts) != 2:
                raise AnnotationError(f"{where}: expected '<relative path> <label>', got '{text}'")
            entries.append(VideoEntry(_join(root, parts[0]), label_of(where, parts[1])))
    if not entries:
        raise AnnotationError(f"{path}: the list holds no videos")
    return entries


def read_class_names(path: str | os.PathLike) -> list[str]:
    """One class name per line in label order, as ``tada synth`` writes (blank lines and ``#``
    comment lines skipped). Lines may also be numbered, ``<index> <name>``, with indices 0, 1, ...
    The whole file decides: it is numbered only when every line has that form, so a plain list
    whose first name starts with a digit ("0 to 60 sprint") keeps its names. Duplicate names fail.
    """
    path = Path(path)
    lines = [(lineno, line.strip()) for lineno, line in
             enumerate(io.StringIO(_read_text(path, "class-name file"), newline=None), start=1)]
    lines = [(lineno, text) for lineno, text in lines if text and not text.startswith("#")]
    numbered = bool(lines) and all(re.fullmatch(r"\d+\s+\S.*", text) for _, text in lines)
    names: list[str] = []
    for lineno, text in lines:
        if numbered:
            index, name = text.split(None, 1)
            if int(index) != len(names):
                raise AnnotationError(f"{path}:{lineno}: expected '{len(names)} <name>' (the file numbers its "
                                      f"lines), got '{text}'")
            text = name.strip()
        if text in names:
            raise AnnotationError(f"{path}:{lineno}: duplicate class name '{text}'")
        names.append(text)
    if not names:
        raise AnnotationError(f"{path}: no class names")
    return names


def _load_json(path: Path, what: str):
    text = _read_text(path, what)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise AnnotationError(f"{path}:{exc.lineno}: invalid JSON ({exc.msg})") from exc


def ssv2_template_key(template: str) -> str:
    """The labels-file key of an SSv2 template: brackets removed (``[something]`` -> ``something``)."""
    return template.replace("[", "").replace("]", "")


def read_ssv2_labels(path: str | os.PathLike) -> list[str]:
    """``something-something-v2-labels.json`` ({template: "index"}) as names in index order."""
    path = Path(path)
    data = _load_json(path, "SSv2 labels file")
    if not isinstance(data, dict) or not data:
        raise AnnotationError(f"{path}: expected a JSON object {{template: index}}")
    by_index: dict[int, str] = {}
    for name, idx in data.items():
        try:
            i = int(idx)
        except (TypeError, ValueError):
            raise AnnotationError(f"{path}: template '{name}' has a non-integer index {idx!r}") from None
        if i in by_index:
            raise AnnotationError(f"{path}: index {i} used by '{by_index[i]}' and '{name}'")
        by_index[i] = name
    if sorted(by_index) != list(range(len(by_index))):
        raise AnnotationError(f"{path}: indices are not 0..{len(by_index) - 1}")
    return [by_index[i] for i in range(len(by_index))]


def read_ssv2_split(path: str | os.PathLike, *, root: str, extension: str, num_classes: int | None,
                    labels: Sequence[str] | None = None) -> list[VideoEntry]:
    """An SSv2 split JSON list: preprocessed entries (``id``, ``label_idx``) or the dataset's own
    entries (``id``, ``template``), whose template is looked up in ``labels`` (brackets removed).

    Videos are ``root/<id><extension>``.
    """
    path = Path(path)
    data = _load_json(path, "SSv2 split file")
    if not isinstance(data, list) or not data:
        raise AnnotationError(f"{path}: expected a non-empty JSON list of videos")
    index = {n: i for i, n in enumerate(labels)} if labels else None
    entries: list[VideoEntry] = []
    for n, item in enumerate(data):
        where = f"{path}: entry {n}"
        if not isinstance(item, dict) or "id" not in item:
            raise AnnotationError(f"{where}: expected an object with an 'id'")
        if "label_idx" in item:
            try:
                label = int(item["label_idx"])
            except (TypeError, ValueError):
                raise AnnotationError(f"{where}: label_idx {item['label_idx']!r} is not an integer") from None
        elif "template" in item:
            if index is None:
                raise AnnotationError(f"{where}: has a template but no labels file was given")
            key = ssv2_template_key(str(item["template"]))
            if key not in index:
                raise AnnotationError(f"{where}: template '{item['template']}' is not in the labels file")
            label = index[key]
        else:
            raise AnnotationError(f"{where}: needs 'label_idx' (preprocessed) or 'template' (original)")
        entries.append(VideoEntry(_join(root, f"{item['id']}{extension}"), _check_label(where, label, num_classes)))
    return entries


_LR = re.compile(r"\b(left|right)\b")


def mirrored_pairs(class_names: Sequence[str]) -> dict[int, int]:
    """Classes that a horizontal flip turns into each other: names equal after swapping the words
    ``left`` and ``right``. Returns a symmetric map {class: mirrored class}."""
    lookup = {name: i for i, name in enumerate(class_names)}
    pairs: dict[int, int] = {}
    for i, name in enumerate(class_names):
        if not _LR.search(name):
            continue
        swapped = _LR.sub(lambda m: "right" if m.group(1) == "left" else "left", name)
        j = lookup.get(swapped)
        if j is not None and j != i:
            pairs[i] = j
    return pairs
