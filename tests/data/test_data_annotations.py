"""Annotation files: tolerant where harmless, strict with file:line where it matters."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tada.data.annotations import (
    AnnotationError,
    mirrored_pairs,
    read_class_names,
    read_ssv2_labels,
    read_ssv2_split,
    read_video_list,
)
from tada.errors import TadaError

FIXTURES = Path(__file__).parent / "fixtures"


def test_video_list_tolerates_whitespace_comments_and_blank_lines(tmp_path):
    f = tmp_path / "list.txt"
    f.write_text("# header comment\n\na/b.mp4 3\n  c d.mp4\t\t0  \nx.mp4 1 # trailing comment\n\n")
    entries = read_video_list(f, root="/data", num_classes=5)
    assert [(e.path, e.label) for e in entries] == [("/data/a/b.mp4", 3), ("/data/c d.mp4", 0), ("/data/x.mp4", 1)]


@pytest.mark.parametrize("text, line, message", [
    ("a.mp4 1\nb.mp4\n", 2, "expected '<relative path> <label>'"),
    ("a.mp4 1\n\nb.mp4 7\n", 3, "label 7 outside [0, 5)"),
    ("a.mp4 one\n", 1, "not an integer"),
    ("a.mp4 -1\n", 1, "outside"),
])
def test_video_list_errors_name_file_and_line(tmp_path, text, line, message):
    f = tmp_path / "list.txt"
    f.write_text(text)
    with pytest.raises(AnnotationError) as info:
        read_video_list(f, root="", num_classes=5)
    assert f"{f}:{line}" in str(info.value) and message in str(info.value)
    assert isinstance(info.value, TadaError)


def test_missing_and_empty_lists(tmp_path):
    with pytest.raises(AnnotationError, match="video list not found"):
        read_video_list(tmp_path / "nope.txt", root="", num_classes=5)
    (tmp_path / "empty.txt").write_text("# nothing\n")
    with pytest.raises(AnnotationError, match="no videos"):
        read_video_list(tmp_path / "empty.txt", root="", num_classes=5)


def test_csv_list_with_header_and_class_names(tmp_path):
    f = tmp_path / "list.csv"
    f.write_text("label,path\ncat,v/1.mp4\n1,\"v/two, three.mp4\"\n")
    entries = read_video_list(f, root="r", num_classes=2, class_names=["cat", "dog"])
    assert [(e.path, e.label) for e in entries] == [("r/v/1.mp4", 0), ("r/v/two, three.mp4", 1)]
    f.write_text("file,label\nv.mp4,0\n")
    with pytest.raises(AnnotationError, match="needs 'path' and 'label'"):
        read_video_list(f, root="", num_classes=2)


def test_class_names_plain_and_numbered(tmp_path):
    f = tmp_path / "classes.txt"
    f.write_text("# classes\nabseiling\n3d printing\n")
    assert read_class_names(f) == ["abseiling", "3d printing"]
    f.write_text("0 abseiling\n1 air drumming\n")
    assert read_class_names(f) == ["abseiling", "air drumming"]
    f.write_text("0 a\n2 b\n")
    with pytest.raises(AnnotationError, match=":2: expected '1 <name>'"):
        read_class_names(f)
    f.write_text("a\nb\na\n")
    with pytest.raises(AnnotationError, match=":3: duplicate"):
        read_class_names(f)


def test_ssv2_real_label_set_mirrored_pairs_are_the_official_swap_table():
    names = read_ssv2_labels(FIXTURES / "something-something-v2-labels.json")
    assert len(names) == 174
    assert mirrored_pairs(names) == {86: 87, 87: 86, 93: 94, 94: 93, 166: 167, 167: 166}
    assert names[86] == "Pulling something from left to right"


def test_mirrored_pairs_ignore_unpaired_names():
    assert mirrored_pairs(["turn left", "go", "turn right", "left alone"]) == {0: 2, 2: 0}


def test_ssv2_split_preprocessed_and_original(tmp_path):
    labels = ["Pushing something from left to right", "Pushing something from right to left"]
    pre = tmp_path / "pre.json"
    pre.write_text(json.dumps([{"id": "12", "label_idx": 1}]))
    assert read_ssv2_split(pre, root="/v", extension=".mp4", num_classes=2)[0].path == "/v/12.mp4"
    raw = tmp_path / "raw.json"
    raw.write_text(json.dumps([{"id": "7", "template": "Pushing [something] from left to right",
                                "label": "pushing a pen from left to right", "placeholders": ["a pen"]}]))
    e = read_ssv2_split(raw, root="/v", extension=".webm", num_classes=2, labels=labels)[0]
    assert (e.path, e.label) == ("/v/7.webm", 0)
    raw.write_text(json.dumps([{"id": "7", "template": "Dancing"}]))
    with pytest.raises(AnnotationError, match="entry 0: template 'Dancing' is not in the labels file"):
        read_ssv2_split(raw, root="", extension=".webm", num_classes=2, labels=labels)
    raw.write_text("[{\"id\": 1,}]")
    with pytest.raises(AnnotationError, match="invalid JSON"):
        read_ssv2_split(raw, root="", extension=".webm", num_classes=2, labels=labels)


def test_a_plain_class_list_whose_first_name_starts_with_0_is_not_numbered(tmp_path):
    f = tmp_path / "classes.txt"
    f.write_text("0 to 60 sprint\nabseiling\n1 mile run\n")
    assert read_class_names(f) == ["0 to 60 sprint", "abseiling", "1 mile run"]


def test_a_byte_order_mark_keeps_the_first_entry(tmp_path):
    bom = "\ufeff"
    f = tmp_path / "list.txt"
    f.write_text(f"{bom}a/first.mp4 0\nb/second.mp4 1\n", encoding="utf-8")
    entries = read_video_list(f, root="/data", num_classes=2)
    assert [e.path for e in entries] == ["/data/a/first.mp4", "/data/b/second.mp4"]
    c = tmp_path / "list.csv"
    c.write_text(f"{bom}path,label\na/first.mp4,0\n", encoding="utf-8")
    assert [e.path for e in read_video_list(c, root="", num_classes=2)] == ["a/first.mp4"]
    n = tmp_path / "classes.txt"
    n.write_text(f"{bom}abseiling\nyoga\n", encoding="utf-8")
    assert read_class_names(n) == ["abseiling", "yoga"]
    j = tmp_path / "labels.json"
    j.write_text(bom + json.dumps({"Pushing something": "0"}), encoding="utf-8")
    assert read_ssv2_labels(j) == ["Pushing something"]


def test_latin1_annotation_files_fail_naming_file_and_line(tmp_path):
    f = tmp_path / "list.txt"
    f.write_bytes("a.mp4 0\ncaf\xe9/b.mp4 1\n".encode("latin-1"))
    with pytest.raises(AnnotationError, match=rf"{f}:2: not UTF-8 text \(byte 0xe9\)"):
        read_video_list(f, root="", num_classes=2)
    n = tmp_path / "classes.txt"
    n.write_bytes("abseiling\n\ncaf\xe9 talk\n".encode("latin-1"))
    with pytest.raises(AnnotationError, match=rf"{n}:3: not UTF-8"):
        read_class_names(n)
