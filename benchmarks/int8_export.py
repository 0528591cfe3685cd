"""Issue 23: int8 against fp32 onnxruntime for the bundled model's network, on training patches only.

Measures, in one run on one core, the fp32 export (the baseline) and three int8 recipes, each calibrated (min-max,
uint8 activations, int8 per-channel weights, QDQ) on the same 96 training patches and scored on 128 other
training patches (64 CRIC training-field patches, 64 composited TCT training images; the `wsi data build` sets
named in configs/cpu_int8.yaml):

* ``as exported``: the graph as torch exports it, frozen batch norms as Mul/Add after each convolution (the first
  attempt, docs/inference.md: scores moved up to 0.22);
* ``bn folded``: the batch norms folded into the convolutions first (onnxruntime's basic optimisation);
* ``bn folded, stem + outputs fp32``: the recipe `wsi model quantize` ships (``inference/quantize.py``).

For each: network time per batch of 4 tiles of 256 px and its ratio to fp32; over anchor positions and classes
where fp32's ranking score is >= 0.1, the 95th / 99.9th percentile and largest |int8 - fp32|; positions fp32
scores >= 0.5 that int8 puts below 0.5 (lost) and the reverse (gained). Nothing here is a validation field.

    python benchmarks/int8_export.py --json benchmarks/results/int8_export.json    # ~2 min on one core
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from wsi_pipeline.benchmarking import RESULTS, write_record
from wsi_pipeline.inference.quantize import batch_reader, calibration_images, fold_batch_norms, fp32_nodes, quantize_qdq
from wsi_pipeline.inference.runtime import OnnxNetwork, export_network
from wsi_pipeline.models.bundled import starter_model_path
from wsi_pipeline.models.checkpoint import file_sha256, load_checkpoint
from wsi_pipeline.models.detector import FAMILIES

ROOT = Path(__file__).resolve().parents[1]
CRIC_TRAIN = ROOT / "data" / "cric_train" / "images"
TCT_TRAIN = ROOT / "data" / "v3_mix" / "train" / "images"
BATCH = 4


def scores(network: OnnxNetwork, images: torch.Tensor, family) -> np.ndarray:
    return torch.cat([family.ranking_scores(network(images[i:i + BATCH])) for i in range(0, len(images), BATCH)]).numpy()


def ms_per_batch(network: OnnxNetwork, images: torch.Tensor, repeats: int = 15) -> float:
    batch = images[:BATCH]
    for _ in range(3):
        network(batch)
    start = time.perf_counter()
    for _ in range(repeats):
        network(batch)
    return (time.perf_counter() - start) / repeats * 1000


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=None, help="checkpoint (default: the bundled model)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    logging.basicConfig(level=logging.ERROR)
    if not CRIC_TRAIN.is_dir() or not TCT_TRAIN.is_dir():
        print(f"error: training patches not found ({CRIC_TRAIN}, {TCT_TRAIN}); build them with the commands in "
              "configs/starter_v3.yaml and configs/starter_v3b.yaml", file=sys.stderr)
        return 2
    import onnx  # noqa: PLC0415

    torch.set_num_threads(1)
    model = args.model or starter_model_path()
    detector = load_checkpoint(model).detector
    family = FAMILIES[detector.spec.detector]
    size = detector.spec.image_size

    def normalised(images: np.ndarray) -> torch.Tensor:
        with torch.inference_mode():
            return detector.normalise(detector.as_float_images(torch.from_numpy(images))).float()

    # calibration and scoring draws are disjoint: different seeds over the same sorted files, then de-duplicated
    calibration = np.concatenate([calibration_images([CRIC_TRAIN], 48, size, seed=0),
                                  calibration_images([TCT_TRAIN], 48, size, seed=0)])
    test = np.concatenate([calibration_images([CRIC_TRAIN], 112, size, seed=0)[48:],
                           calibration_images([TCT_TRAIN], 112, size, seed=0)[48:]])
    calibration_t, test_t = normalised(calibration), normalised(test)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        keys = export_network(detector, folder / "fp32.onnx", file_sha256(model))
        fold_batch_norms(folder / "fp32.onnx", folder / "folded.onnx")
        keep = fp32_nodes(onnx.load(str(folder / "folded.onnx")))
        recipes = {"as exported": ("fp32.onnx", []), "bn folded": ("folded.onnx", []),
                   "bn folded, stem + outputs fp32": ("folded.onnx", keep)}
        fp32 = OnnxNetwork(folder / "fp32.onnx", keys, num_threads=1)
        reference, fp32_ms = scores(fp32, test_t, family), ms_per_batch(fp32, test_t)
        rows = {"fp32": {"ms_per_batch": round(fp32_ms, 1), "speedup": 1.0}}
        print(f"{model.name}: {len(calibration)} calibration and {len(test)} scoring training patches, one core\n")
        print(f"{'network':32s} {'ms / 4 tiles':>12s} {'vs fp32':>8s} {'p95':>7s} {'p99.9':>7s} {'max':>7s} {'lost':>6s} {'gained':>6s}")
        print(f"{'fp32 (baseline)':32s} {fp32_ms:12.1f} {1.0:7.2f}x")
        positions = reference >= 0.1
        high = reference >= 0.5
        for name, (source, exclude) in recipes.items():
            quantize_qdq(folder / source, folder / "int8.onnx", exclude, batch_reader(calibration_t.numpy()))
            network = OnnxNetwork(folder / "int8.onnx", keys, num_threads=1, precision="int8")
            got, ms = scores(network, test_t, family), ms_per_batch(network, test_t)
            diff = np.abs(got - reference)[positions]
            row = {"ms_per_batch": round(ms, 1), "speedup": round(fp32_ms / ms, 2),
                   "p95": round(float(np.percentile(diff, 95)), 4), "p999": round(float(np.percentile(diff, 99.9)), 4),
                   "max": round(float(diff.max()), 4), "lost": int((high & (got < 0.5)).sum()),
                   "gained": int((~high & (got >= 0.5)).sum()), "fp32_convolutions": len(exclude)}
            rows[name] = row
            print(f"{name:32s} {ms:12.1f} {row['speedup']:7.2f}x {row['p95']:7.3f} {row['p999']:7.3f} {row['max']:7.3f} "
                  f"{row['lost']:6d} {row['gained']:6d}")
    print(f"\npositions scoring >= 0.1 in fp32: {int(positions.sum())}; >= 0.5: {int(high.sum())}")
    write_record(args.json, {"model": model.name, "calibration_patches": len(calibration), "scoring_patches": len(test),
                             "positions": int(positions.sum()), "positions_high": int(high.sum()), "rows": rows,
                             "seconds": round(time.perf_counter() - started, 1)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
