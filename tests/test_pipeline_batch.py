"""Batch plumbing of wsi-run that needs no model: slide discovery and the cohort summary."""

from pathlib import Path

import pytest

from wsi_pipeline.errors import WsiError
from wsi_pipeline.pipeline import SlideOutcome, find_slides, slide_out_dir, write_summary


def test_find_slides_folder_glob_and_list(tmp_path):
    for name in ["a.svs", "b.ndpi", "c.txt.bak", "notes.md", "d.ome.tiff"]:
        (tmp_path / name).write_bytes(b"x")
    dcm = tmp_path / "dicom"
    dcm.mkdir()
    (dcm / "i0.dcm").write_bytes(b"x")
    (dcm / "i1.dcm").write_bytes(b"x")
    assert [p.name for p in find_slides([str(tmp_path)])] == ["a.svs", "b.ndpi", "d.ome.tiff"]
    assert [p.name for p in find_slides([str(tmp_path / "*.svs")])] == ["a.svs"]
    lst = tmp_path / "list.txt"
    lst.write_text("# cohort\na.svs\n\nb.ndpi\n")
    assert [p.name for p in find_slides([str(lst)])] == ["a.svs", "b.ndpi"]
    # instances of one DICOM slide count once
    assert len(find_slides([str(dcm)])) == 1
    with pytest.raises(WsiError, match="no such file or folder"):
        find_slides([str(tmp_path / "nothing")])


def test_missing_file_with_extension_is_kept_for_the_reader_to_report(tmp_path):
    assert find_slides([str(tmp_path / "gone.svs")]) == [tmp_path / "gone.svs"]


def test_slide_out_dir_strips_compound_extensions(tmp_path):
    assert slide_out_dir(tmp_path, Path("x/case 1.ome.tiff")).name == "case 1"
    assert slide_out_dir(tmp_path, Path("x/series7/i0.dcm")).name == "series7"


def test_summary_sorted_by_suspicion_failures_last(tmp_path):
    outcomes = [
        SlideOutcome("s1.svs", "o/s1", "ok", category="NILM", suspicion=0.1, adequacy="adequate"),
        SlideOutcome("bad.svs", "o/bad", "failed", reason="bad.svs: not a TIFF file"),
        SlideOutcome("s2.svs", "o/s2", "ok", category="HSIL", suspicion=0.9, adequacy="limited"),
    ]
    csv_path, html_path = write_summary(tmp_path, outcomes)
    lines = csv_path.read_text().splitlines()
    assert lines[0].startswith("slide,status,category,suspicion")
    assert [ln.split(",")[0] for ln in lines[1:]] == ["s2.svs", "s1.svs", "bad.svs"]
    assert "not a TIFF file" in lines[3]
    page = html_path.read_text()
    assert page.index("s2.svs") < page.index("s1.svs") < page.index("bad.svs")
    assert "Research use only" in page
