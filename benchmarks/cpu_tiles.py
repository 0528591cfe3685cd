"""Issue 23: detection speed per mm² of old tiling (tile = 256 px training patch, eager torch) against the new
defaults (1024 px tiles, onnxruntime), in the same run, and the abnormal-cell recall of both on the 8 CRIC fields.

Three parts, all on real cells and the bundled starter model (or ``--model``):

1. ``wsi-run``'s per-slide path (tiling -> detection -> report) on the CRIC mosaic (8 real fields side by
   side, ``wsi_pipeline.benchmarking.real_fields.write_cric_mosaic``) with the old settings
   (``tiling.patch_size: 256``, ``inference.backend: torch``) and with the new defaults: cell area (mm², from
   the tissue mask) per second of the three stages.
2. Abnormal-cell recall (abnormal nuclei found as abnormal at the report thresholds) and NILM nuclei flagged on
   annotated CRIC fields that no model trained on (the validation side of ``configs/splits/cric.csv``, each at
   its ``mpp_estimate``; ``--val-fields``), old against new, plus how many detections counted at the report
   thresholds agree.
3. The network alone on tiles of the real TCT field: tile size x backend, batch and threads (the settings
   ``inference/device.py`` picks), as effective mm²/s (each tile adds ``(tile - overlap)²`` of new area).
4. (``--views``, alone) recall on the validation fields at 256 and 1024 px tiles, each with the overlap that has
   a cell seen in ~4 tiles and in ~1.5: whether the tile size or the number of views sets the recall.

    python benchmarks/cpu_tiles.py                      # everything, 2-core CPU: a few minutes
    python benchmarks/cpu_tiles.py --skip-fields        # only 1 and 3
    python benchmarks/cpu_tiles.py --skip-fields --skip-network --slide 4096   # 1 on the mosaic and on a 4.2 mm2 slide
    python benchmarks/cpu_tiles.py --views --json benchmarks/results/cpu_tiles_views.json   # only 4
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from wsi_pipeline.aggregate.summary import class_thresholds
from wsi_pipeline.benchmarking import RESULTS, portable_path, write_record
from wsi_pipeline.benchmarking.images import SLIDE_MPP, field_patches, mirrored_field_slide
from wsi_pipeline.benchmarking.real_fields import CRIC_FIELDS, CRIC_MPP, validation_fields, write_cric_mosaic
from wsi_pipeline.datasets.slides import read_mpp_table
from wsi_pipeline.config import load_config, read_yaml
from wsi_pipeline.datasets.annotations import load_annotations
from wsi_pipeline.inference.runtime import onnx_network
from wsi_pipeline.models.bundled import starter_model_path
from wsi_pipeline.aggregate.cell_hits import NucleusHitResult, nucleus_hits, truth_from_annotations
from wsi_pipeline.models.checkpoint import load_checkpoint
from wsi_pipeline.pipeline import RunOptions, run_slide
from wsi_pipeline.store.detections import read_detections
from wsi_pipeline.synth.config import load_synth_config
from wsi_pipeline.taxonomy import load_taxonomy

SETTINGS = {
    # the behaviour before issue 23: every key a newer default or profile changes is pinned
    "old (256 px tiles = training patch, torch)": {"tiling": {"patch_size": 256, "overlap": 128},
                                                   "inference": {"backend": "torch", "precision": "fp32"},
                                                   "report": {"score_threshold": 0.5, "morphometry_workers": 1}},
    # the defaults before int8 (onnxruntime in fp32), so the int8 default's gain is measured in the same run
    "fp32 defaults (256 px tiles, onnxruntime fp32)": {"inference": {"precision": "fp32"}},
    "new defaults": {},
}


def run(image: Path, out: Path, model: Path, overrides: dict, mpp: float = CRIC_MPP) -> tuple[Path, dict]:
    cfg = load_config(overrides={**overrides, "tiling": {**overrides.get("tiling", {}), "scheduler": "threads"}})
    outcome = run_slide(image, out, cfg, RunOptions(model=model, mpp=mpp, progress=False, force=True, device="cpu"))
    if not outcome.ok:
        raise SystemExit(f"error: {image}: {outcome.reason}")
    return Path(outcome.out_dir), outcome.timings


def run_cli(image: Path, out: Path, model: Path, overrides: dict, mpp: float = CRIC_MPP) -> tuple[Path, dict]:
    """``wsi-run`` itself, in its own process (as a lab runs it: its report's worker processes start from the
    small ``wsi-run`` script, not from this one); its output folder and stage timings."""
    shutil.rmtree(out / image.stem, ignore_errors=True)  # --force redoes the report but reuses a finished store and table
    out.mkdir(parents=True, exist_ok=True)
    config = out / "settings.yaml"
    config.write_text(yaml.safe_dump(overrides or {}))
    cmd = [str(Path(sys.executable).with_name("wsi-run")), str(image), "--mpp", str(mpp), "--model", str(model),
           "--config", str(config), "--out", str(out), "--device", "cpu", "--scheduler", "threads", "--force", "-q"]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    folder = out / image.stem
    return folder, json.loads((folder / "report.json").read_text())["timings"]


def folder_name(setting: str) -> str:
    """A setting's output folder: ``old``, ``new``, or ``also_<profile stem>`` (one per ``--also-config``).

    >>> folder_name("also, fast_cpu.yaml"), folder_name("old (256 px tiles = training patch, torch)")
    ('also_fast_cpu', 'old')
    """
    words = setting.split()
    return f"also_{Path(words[1]).stem}" if words[0] == "also," else words[0].rstrip(",")


def mosaic_speed(model: Path, out: Path) -> dict:
    mosaic = write_cric_mosaic(out)
    rows = {}
    for name, overrides in SETTINGS.items():
        folder, timings = run_cli(mosaic, out / folder_name(name), model, overrides)
        rows[name] = speed_row(folder, timings)
    return rows


def slide_speed(model: Path, out: Path, size: int) -> dict:
    """Part 1 on a slide-sized input: ``wsi-run`` on a SIZE x SIZE px slide of mirrored copies of the real TCT
    field at 0.5 um/px (cells everywhere), each setting in turn. Per-run costs (starting the process, the
    model, the report's fixed pages) weigh little here, as on a real slide; the report still measures at most
    ``report.morphometry_nilm_sample`` NILM nuclei plus the abnormal cells."""
    slide = mirrored_field_slide(size, out / "slide")
    rows = {}
    for name, overrides in SETTINGS.items():
        folder, timings = run_cli(slide, out / "slide_runs" / folder_name(name), model, overrides, mpp=SLIDE_MPP)
        rows[name] = speed_row(folder, timings)
    return rows


def speed_row(folder: Path, timings: dict) -> dict:
    """Tiles, cell area, stage seconds and mm²/s of one ``wsi-run`` output folder."""
    report = json.loads((folder / "report.json").read_text())
    area = float(report["tiling"].get("cell_area_mm2") or 0.0)
    seconds = sum(timings[k] for k in ("tiling_s", "detection_s", "report_s"))
    det = read_detections(folder / "detections.parquet")
    return {"tiles": int(report["tiling"]["n_patches"]), "tile_px": int(report["tiling"]["patch_size"]),
            "cell_area_mm2": round(area, 3), **timings, "mm2_per_s": round(area / seconds, 4),
            "backend": det.meta.inference.backend, "category": report["category"]["name"],
            "cells_measured": int(report.get("morphometry", {}).get("cells_measured", 0))}


def pooled_hits(model: Path, out: Path, overrides: dict, fields: list[Path], thresholds, taxonomy
                ) -> tuple[NucleusHitResult, list[np.ndarray], float]:
    """Nucleus hits pooled over ``fields`` run with ``overrides``, the counted cells per field
    (``x0, y0, x1, y1, label``) and the detection seconds."""
    aliases = load_synth_config(None, taxonomy).label_aliases
    mpp = read_mpp_table(CRIC_FIELDS / "fields.csv")
    pooled, counted, seconds = NucleusHitResult(), [], 0.0
    for image in fields:
        shutil.rmtree(out / image.stem, ignore_errors=True)  # a field tiled by an earlier run (or other settings)
        folder, timings = run(image, out, model, overrides, mpp[image.stem])
        seconds += timings["detection_s"]
        det = read_detections(folder / "detections.parquet")
        truth = truth_from_annotations(load_annotations(CRIC_FIELDS / "cells.csv", taxonomy, aliases, image=image, strict=True))
        pooled = pooled.add(nucleus_hits(det.boxes, det.labels, det.scores, thresholds, taxonomy, truth))
        keep = det.scores >= np.array([thresholds[int(c)] for c in det.labels]) if len(det) else np.zeros(0, bool)
        counted.append(np.c_[det.boxes[keep], det.labels[keep]])
    return pooled, counted, seconds


def field_recall(model: Path, out: Path, n_fields: int) -> dict:
    taxonomy = load_taxonomy()
    fields = validation_fields(n_fields)
    result: dict = {"fields": [f.name for f in fields]}
    counted: dict[str, list[np.ndarray]] = {}
    for name, overrides in SETTINGS.items():
        thresholds, _ = class_thresholds(taxonomy, load_config(overrides=overrides).report)  # a setting's own thresholds
        pooled, counted[name], _ = pooled_hits(model, out / "fields" / folder_name(name), overrides, fields, thresholds, taxonomy)
        d = pooled.to_dict()
        result[name] = {"abnormal_found": f"{pooled.abnormal_found}/{pooled.abnormal_total}",
                        "abnormal_recall": round(pooled.abnormal_found / max(1, pooled.abnormal_total), 3),
                        "nilm_flagged": f"{pooled.nilm_flagged}/{pooled.nilm_total}", "detail": d}
    old, new = counted[next(iter(SETTINGS))], counted[next(n for n in SETTINGS if n.startswith("new"))]
    same = total_old = total_new = 0
    for a, b in zip(old, new):  # counted cells of one run with a same-class counted cell of the other (IoU >= 0.5)
        total_old, total_new = total_old + len(a), total_new + len(b)
        if len(a) and len(b):
            from torchvision.ops import box_iou  # noqa: PLC0415

            iou = box_iou(torch.from_numpy(a[:, :4]).float(), torch.from_numpy(b[:, :4]).float()).numpy()
            iou[a[:, 4][:, None] != b[:, 4][None, :]] = 0
            same += int((iou.max(axis=1) >= 0.5).sum())
    result["counted_cells"] = {"old": total_old, "new": total_new, "old_with_a_match_in_new": same}
    return result


# part 4: tile size against how many tiles see each cell (tiles step by tile - overlap)
VIEW_SETTINGS = {
    "256/128": (256, 128),   # the default: step 128, a cell in ~4 tiles
    "256/64": (256, 64),     # step 192: ~1.8 tiles (overlap below the largest cells: a diagnostic only)
    "1024/128": (1024, 128),  # step 896: ~1.3 tiles
    "1024/512": (1024, 512),  # step 512: ~4 tiles again
}


def views_check(model: Path, out: Path, n_fields: int) -> dict:
    """Recall on the validation fields for each of :data:`VIEW_SETTINGS` (onnxruntime): is it the tile size or
    the number of tiles a cell is seen in that sets it?"""
    taxonomy = load_taxonomy()
    thresholds, _ = class_thresholds(taxonomy, load_config().report)
    fields = validation_fields(n_fields)
    rows = {}
    for name, (tile, overlap) in VIEW_SETTINGS.items():
        overrides = {"tiling": {"patch_size": tile, "overlap": overlap}, "inference": {"backend": "onnxruntime"}}
        pooled, counted, seconds = pooled_hits(model, out / "views" / name.replace("/", "_"), overrides, fields,
                                               thresholds, taxonomy)
        rows[name] = {"views_per_cell": round((tile / (tile - overlap)) ** 2, 1),
                      "abnormal_found": f"{pooled.abnormal_found}/{pooled.abnormal_total}",
                      "nilm_flagged": f"{pooled.nilm_flagged}/{pooled.nilm_total}",
                      "high_grade": f"{pooled.high_grade_found}/{pooled.high_grade_total}",
                      "counted_cells": int(sum(len(c) for c in counted)), "detection_s": round(seconds, 1)}
    return {"fields": len(fields), "settings": rows}


def network_alone(model: Path, overlap: int = 128) -> list[dict]:
    loaded = load_checkpoint(model)
    det = loaded.detector
    rows = []
    for threads in (2, 1):
        torch.set_num_threads(threads)
        ort = onnx_network(det, model, loaded.meta["sha256"], threads)
        configs = [("torch", 256, 4), ("onnxruntime", 256, 4), ("onnxruntime", 512, 1), ("onnxruntime", 768, 1),
                   ("onnxruntime", 1024, 1), ("onnxruntime", 1024, 2)] if threads == 2 else [("onnxruntime", 1024, 1)]
        for backend, tile, batch in configs:
            n = max(batch * 2, 4 if tile <= 512 else 2)
            tiles = field_patches(n, tile)
            kw = {"network": ort} if backend == "onnxruntime" else {}
            with torch.inference_mode():
                det.predict(tiles[:batch], **kw)
                started = time.perf_counter()
                for s in range(0, n, batch):
                    det.predict(tiles[s:s + batch], **kw)
                per_tile = (time.perf_counter() - started) / n
            new_mm2 = ((tile - overlap) * 0.5e-3) ** 2
            rows.append({"backend": backend, "tile": tile, "batch": batch, "threads": threads,
                         "s_per_tile": round(per_tile, 3), "mm2_per_s": round(new_mm2 / per_tile, 4)})
            print(f"  {backend:12s} tile {tile:5d} batch {batch} threads {threads}: {per_tile:6.2f} s/tile, "
                  f"{new_mm2 / per_tile:.4f} mm2/s", flush=True)
    torch.set_num_threads(os.cpu_count() or 1)
    return rows


def print_speed(rows: dict) -> None:
    for name, row in rows.items():
        print(f"  {name:44s} {row['tiles']:5d} tiles of {row['tile_px']} px, {row['backend']:11s} tiling {row['tiling_s']:6.1f} s, "
              f"detection {row['detection_s']:6.1f} s, report {row['report_s']:5.1f} s ({row['cells_measured']} nuclei): "
              f"{row['mm2_per_s']:.4f} mm2/s ({row['cell_area_mm2']} mm2), call {row['category']}")
    old, *others = rows.items()
    for name, row in others:
        print(f"  {name} / old: {row['mm2_per_s'] / old[1]['mm2_per_s']:.2f}x mm2/s "
              f"(detection alone {old[1]['detection_s'] / row['detection_s']:.2f}x)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=None, help="checkpoint (default: bundled starter model)")
    ap.add_argument("--out", type=Path, default=RESULTS / "cpu_tiles")
    ap.add_argument("--skip-fields", action="store_true", help="no recall on the annotated CRIC validation fields")
    ap.add_argument("--val-fields", type=int, default=20, help="how many CRIC validation fields (sorted) score recall")
    ap.add_argument("--skip-network", action="store_true", help="no network-alone table")
    ap.add_argument("--tile", type=int, default=None, help="tile px of the new settings (default: the config's)")
    ap.add_argument("--new-config", type=Path, default=None,
                    help="a YAML config whose settings are the new ones (e.g. configs/fast_cpu.yaml)")
    ap.add_argument("--also-config", type=Path, action="append", default=[],
                    help="a further YAML config measured in the same run (repeat; speed parts only)")
    ap.add_argument("--views", action="store_true",
                    help="part 4 only: recall at 256 and 1024 px tiles with the overlap that has each cell seen ~4 or ~1.5 times")
    ap.add_argument("--slide", type=int, default=0, metavar="PX",
                    help="also part 1 on a PX x PX slide of the mirrored real TCT field at 0.5 um/px (e.g. 4096: 4.2 mm2)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    if args.also_config and not (args.skip_fields or args.views):
        ap.error("--also-config measures speed only: add --skip-fields")
    if args.tile:
        SETTINGS.pop("new defaults")
        SETTINGS[f"new, {args.tile} px tiles"] = {"tiling": {"patch_size": args.tile}}
    elif args.new_config:
        SETTINGS.pop("new defaults")
        SETTINGS[f"new, {args.new_config.name}"] = read_yaml(args.new_config)
    for extra in args.also_config:
        SETTINGS[f"also, {extra.name}"] = read_yaml(extra)
    logging.basicConfig(level=logging.WARNING)
    model = args.model or starter_model_path()
    record: dict = {"cpu_cores": os.cpu_count(), "model": portable_path(model)}
    if args.views:
        print(f"4. the first {args.val_fields} CRIC validation fields: tile px / overlap px, report thresholds")
        record["views"] = views_check(model, args.out, args.val_fields)
        for name, r in record["views"]["settings"].items():
            print(f"  {name:9s} ~{r['views_per_cell']:3.1f} tiles a cell: abnormal found {r['abnormal_found']}, NILM flagged "
                  f"{r['nilm_flagged']}, high grade {r['high_grade']}, {r['counted_cells']} counted, detection {r['detection_s']} s")
        write_record(args.json, record, indent=1)
        return 0
    print(f"model {model.name}, {os.cpu_count()} CPU cores\n\n3. network + post-processing alone, real TCT field tiles:")
    record["network_alone"] = [] if args.skip_network else network_alone(model)
    print("\n1. wsi-run on the CRIC mosaic (8 real fields, 0.30 um/px):")
    record["mosaic"] = mosaic_speed(model, args.out)
    print_speed(record["mosaic"])
    if args.slide:
        mm = args.slide * SLIDE_MPP / 1000
        print(f"\n1b. wsi-run on a {args.slide} px slide of the mirrored real TCT field ({mm:.1f} x {mm:.1f} mm at 0.5 um/px):")
        record["slide_px"], record["slide"] = args.slide, slide_speed(model, args.out, args.slide)
        print_speed(record["slide"])
    if not args.skip_fields:
        print(f"\n2. the first {args.val_fields} annotated CRIC validation fields, report thresholds:")
        record["fields"] = field_recall(model, args.out, args.val_fields)
        for name in SETTINGS:
            r = record["fields"][name]
            print(f"  {name:44s} abnormal nuclei found {r['abnormal_found']} (recall {r['abnormal_recall']}), "
                  f"NILM flagged {r['nilm_flagged']}")
        c = record["fields"]["counted_cells"]
        print(f"  counted cells: old {c['old']}, new {c['new']}; old ones with a same-class new one (IoU >= 0.5): "
              f"{c['old_with_a_match_in_new']}")
    write_record(args.json, record, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
