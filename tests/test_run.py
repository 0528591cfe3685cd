"""End to end: `wsi-run` on synthetic and real slides, batches with bad slides, resume, --help examples,
and the cohort routes (Snakemake, a Dask cluster address)."""

from __future__ import annotations

import csv
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from wsi_pipeline.cli.run import EPILOG, main
from wsi_pipeline.config import load_train_config
from wsi_pipeline.models.training import train
from wsi_pipeline.synth import generate_slide, make_training_set
from wsi_pipeline.taxonomy import CONFIG_DIR

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
SLIDE_FILES = ["patches.zarr", "detections.parquet", "report.json", "report.html", "cells.geojson", "cells.xml",
               "cells.csv", "run.log"]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    """A detector trained by the real training code for a few steps (plumbing, not accuracy)."""
    d = tmp_path_factory.mktemp("tiny_model")
    make_training_set(d / "data", n_slides=1, size_px=3000, target_mpp=1.0, patch_size=128, seed=5)
    cfg = load_train_config(CONFIG_DIR / "train_demo.yaml", overrides={
        "train_data": str(d / "data"), "out": str(d / "run"), "patch_size": 128, "device": "cpu",
        "model": {"fpn_channels": 32}, "augment": {"enabled": False},
        "schedule": {"epochs": 1, "max_iters_per_epoch": 3, "batch_size": 4, "warmup_iters": 1},
    })
    return train(cfg, out_dir=d / "run", progress=False).model_path


@pytest.fixture(scope="module")
def two_slides(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("cohort")
    for seed in (11, 12):
        generate_slide(d, 3072, seed=seed, progress=False)
    for extra in d.glob("*.json"):  # keep only slides in the cohort folder
        extra.rename(d.parent / extra.name)
    for extra in d.glob("*.geojson"):
        extra.rename(d.parent / extra.name)
    return d


def _run(args: list[str], model: Path) -> int:
    return main([*args, "--model", str(model), "--device", "cpu", "--no-progress", "--scheduler", "threads"])


def _summary(out: Path) -> dict[str, dict[str, str]]:
    with open(out / "summary.csv") as fh:
        return {Path(r["slide"]).name: r for r in csv.DictReader(fh)}


def test_two_synthetic_slides_end_to_end_then_skip_then_force(tiny_model, two_slides, tmp_path, capsys):
    out = tmp_path / "out"
    assert _run([str(two_slides), "--out", str(out)], tiny_model) == 0
    slides = sorted(two_slides.glob("*.svs"))
    for slide in slides:
        folder = out / slide.stem
        for name in SLIDE_FILES:
            assert (folder / name).exists(), f"{folder / name} missing"
        report = json.loads((folder / "report.json").read_text())
        assert report["slide"]["name"].startswith(slide.stem)
        assert set(report["timings"]) >= {"tiling_s", "detection_s"}
    rows = _summary(out)
    assert {r["status"] for r in rows.values()} == {"ok"} and len(rows) == 2
    printed = capsys.readouterr().out
    assert "2/2 slides done" in printed and "index.html" in printed
    index = (out / "index.html").read_text()
    assert all(f'href="{s.stem}/report.html"' in index for s in slides), "index links each report relatively"

    # rerun: finished slides are skipped, nothing rewritten
    stamp = (out / slides[0].stem / "report.json").stat().st_mtime_ns
    assert _run([str(two_slides), "--out", str(out)], tiny_model) == 0
    assert {r["status"] for r in _summary(out).values()} == {"skipped"}
    assert (out / slides[0].stem / "report.json").stat().st_mtime_ns == stamp

    # --force redoes them; --delete-store drops the patch store after the report
    assert _run([str(slides[0]), "--out", str(out), "--force", "--delete-store"], tiny_model) == 0
    assert (out / slides[0].stem / "report.json").stat().st_mtime_ns != stamp
    assert not (out / slides[0].stem / "patches.zarr").exists()


def test_batch_of_real_and_corrupt_slides_goes_on_and_exits_1(tiny_model, slides_dir, tmp_path, capsys):
    out = tmp_path / "out"
    assert _run([str(slides_dir), "--out", str(out)], tiny_model) == 1
    rows = _summary(out)
    assert rows["cmu-1-small-region.svs"]["status"] == "ok"
    assert (out / "cmu-1-small-region" / "report.html").is_file()
    # each reason must say why; unreadable.svs is 16 x 16 px, so the size check stops it before its tiles are read
    expected_failures = {
        "broken.svs": "not a slide or image",
        "unopenable.tiff": "unsupported TIFF compression",
        "unreadable.svs": "smaller than one patch",
        "kidney-48-5.tif": "--mpp",
        "boxes.tiff": "implausible resolution",
        "small.svs": "smaller than one patch",
    }
    assert all(expected_failures.values()), "an empty fragment would match any reason"
    for name, fragment in expected_failures.items():
        row = rows[name]
        assert row["status"] == "failed", (name, row)
        assert name in row["reason"] and fragment in row["reason"] and "\n" not in row["reason"]
        assert "Traceback" not in row["reason"] and "unexpected" not in row["reason"], row["reason"]
        assert not (out / Path(name).stem / "report.json").exists()
    # the failures are listed after the successes in the index page
    page = (out / "index.html").read_text()
    assert page.index("cmu-1-small-region") < page.index("broken.svs")
    assert "broken.svs: failed" in capsys.readouterr().out


def test_killed_run_resumes_without_redoing_finished_stages(tiny_model, tmp_path):
    slide = generate_slide(tmp_path / "s", 4096, seed=21, progress=False).slide_path
    out = tmp_path / "out"
    folder = out / slide.stem
    cmd = [str(BIN / "wsi-run"), str(slide), "--out", str(out), "--model", str(tiny_model), "--device", "cpu",
           "--no-progress", "--scheduler", "threads"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    partial = folder / "detections.partial"
    deadline = time.time() + 180
    while time.time() < deadline and proc.poll() is None and not any(partial.glob("*.npz")):
        time.sleep(0.02)
    assert proc.poll() is None, "the run finished before it could be killed; make the test slide bigger"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (folder / "report.json").exists(), "a killed run must not leave a report marked complete"
    assert not (folder / "detections.parquet").exists(), "detection was interrupted: no table may exist yet"
    shards = {p: p.stat().st_mtime_ns for p in (folder / "patches.zarr").rglob("*") if p.is_file()}
    finished_batches = {p.name for p in partial.glob("*.npz")}
    assert shards and finished_batches

    rerun = subprocess.run(cmd, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    assert (folder / "report.json").is_file()
    # the complete patch store was reused as it was: no shard rewritten
    assert {p: p.stat().st_mtime_ns for p in shards} == shards


def test_help_examples_run(tiny_model, two_slides, tmp_path):
    """Every example in `wsi-run --help` runs, with its placeholders mapped to real files."""
    from distributed import LocalCluster

    slide = sorted(two_slides.glob("*.svs"))[0]
    listing = tmp_path / "list.txt"
    listing.write_text(f"{slide}\n")
    out = tmp_path / "results"
    examples = [ln.strip().split("  #")[0].strip() for ln in EPILOG.splitlines() if ln.strip().startswith("wsi-run ")]
    assert len(examples) >= 6
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        mapping = {
            "slide.svs": str(slide), "slides/": str(two_slides), "results/": str(out),
            "'scans/*.ndpi'": shlex.quote(str(two_slides / "*.svs")), "list.txt": str(listing),
            "tcp://10.0.0.5:8786": cluster.scheduler_address,
        }
        for example in examples:
            if example.split()[1] == "--demo":
                continue  # the demo trains its own model: covered by test_demo_* (slow)
            for placeholder, real in mapping.items():
                example = example.replace(placeholder, real)
            args = shlex.split(example)[1:] + ["--model", str(tiny_model), "--device", "cpu", "--no-progress"]
            assert main(args) == 0, example
    assert (out / slide.stem / "report.html").is_file()


def test_dry_run_plans_without_writing(tiny_model, two_slides, tmp_path, capsys):
    out = tmp_path / "out"
    assert main([str(two_slides), "--out", str(out), "--model", str(tiny_model), "--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert "2/2 slides readable" in printed and "patches" in printed
    assert not out.exists()


def test_usage_errors_exit_2(capsys):
    assert main([]) == 2
    with pytest.raises(SystemExit) as exc:
        main(["--no-such-option"])
    assert exc.value.code == 2


def test_dask_cluster_address_runs_one_task_per_slide(tiny_model, two_slides, tmp_path):
    from distributed import LocalCluster

    out = tmp_path / "out"
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        rc = main([str(two_slides), "--out", str(out), "--model", str(tiny_model), "--device", "cpu",
                   "--no-progress", "--scheduler", cluster.scheduler_address])
    assert rc == 0
    rows = _summary(out)
    assert len(rows) == 2 and {r["status"] for r in rows.values()} == {"ok"}


@pytest.mark.slow
def test_snakemake_workflow_on_two_slides(tiny_model, two_slides, tmp_path):
    out = tmp_path / "results"
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    cmd = [str(BIN / "snakemake"), "-s", str(ROOT / "workflows" / "Snakefile"), "--cores", "2",
           "--directory", str(tmp_path), "--config", f"slides={two_slides}", f"out={out}", f"model={tiny_model}",
           "device=cpu"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = _summary(out)
    assert len(rows) == 2 and {r["status"] for r in rows.values()} == {"ok"}
    for slide in two_slides.glob("*.svs"):
        assert (out / slide.stem / "cells.geojson").is_file()
    # a second run has nothing to do
    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr
