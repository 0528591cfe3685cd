"""`wsi model`: look inside a detector checkpoint, or export a deployable copy of one."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .common import RESEARCH_NOTICE, HelpFormatter

EPILOG = """examples:
  wsi model info                                   # the bundled starter model
  wsi model info runs/starter/model.pt
  wsi model info --json > starter_meta.json        # everything: training config, metrics, card
  wsi model export runs/starter/model.pt my_model.pt --card docs/card.json   # fp16, no training state
  wsi model quantize runs/starter/model.pt data/train/images   # int8 calibration for CPUs, next to model.pt

""" + RESEARCH_NOTICE


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("model", help="show or export a detector checkpoint", description=__doc__, epilog=EPILOG,
                       formatter_class=HelpFormatter)
    inner = p.add_subparsers(dest="model_command", metavar="WHAT", required=True)
    i = inner.add_parser("info", help="architecture, classes, resolution and training of a checkpoint",
                         formatter_class=HelpFormatter, epilog=EPILOG)
    i.add_argument("checkpoint", nargs="?", type=Path, help="checkpoint (default: the bundled starter model)")
    i.add_argument("--json", action="store_true", help="print the checkpoint's whole metadata as JSON")
    i.set_defaults(func=run_info)
    e = inner.add_parser("export", help="deployable copy: fp16 weights, no optimizer state",
                         formatter_class=HelpFormatter, epilog=EPILOG)
    e.add_argument("checkpoint", type=Path, help="checkpoint written by `wsi train` (model.pt)")
    e.add_argument("out", type=Path, help="exported checkpoint")
    e.add_argument("--fp32", action="store_true", help="keep float32 weights (twice the size)")
    e.add_argument("--card", type=Path, default=None, help="JSON file stored as the checkpoint's model card")
    e.set_defaults(func=run_export)
    q = inner.add_parser("quantize", help="int8 calibration for onnxruntime on the CPU, measured on training patches",
                         formatter_class=HelpFormatter, epilog=EPILOG,
                         description="Write <stem>.<sha256>.int8.json (activation ranges) next to the checkpoint (or "
                                     "--out). Detection on the CPU builds the int8 network from it once and uses it "
                                     "when inference.precision is auto or int8 (docs/inference.md).")
    q.add_argument("checkpoint", type=Path, help="checkpoint written by `wsi train` or `wsi model export`")
    q.add_argument("images", type=Path, nargs="+",
                   help="folders of training patches at the model's resolution (`wsi data build` images/)")
    q.add_argument("--count", type=int, default=96, help="calibration images drawn from the folders (default 96)")
    q.add_argument("--seed", type=int, default=0, help="which images are drawn")
    q.add_argument("--out", type=Path, default=None, help="write here instead of next to the checkpoint")
    q.set_defaults(func=run_quantize)
    return p


def run_quantize(args: argparse.Namespace) -> int:
    from ..errors import ArtifactError  # noqa: PLC0415
    from ..inference.quantize import quantize_checkpoint  # noqa: PLC0415
    from ..inference.runtime import runtime_available  # noqa: PLC0415

    if not args.checkpoint.is_file():
        raise ArtifactError(args.checkpoint, "model checkpoint not found")
    if args.count < 1:
        raise ArtifactError(None, f"--count must be >= 1, got {args.count}")
    if not runtime_available():
        raise ArtifactError(args.checkpoint, "int8 calibration needs onnxruntime and onnx (pip install onnxruntime onnx)")
    result = quantize_checkpoint(args.checkpoint, list(args.images), args.out, args.count, args.seed)
    print(f"wrote {result.path} ({result.path.stat().st_size / 1e3:.0f} kB), calibrated on {result.images} images; "
          f"{result.kept_fp32} convolutions kept in fp32")
    print(f"int8 vs fp32 cell scores on those images: 95th percentile difference {result.score_diff_p95:.3f}, "
          f"largest {result.score_diff_max:.3f} (positions scoring >= 0.1)")
    return 0


def run_info(args: argparse.Namespace) -> int:
    from ..models.bundled import starter_model_path  # noqa: PLC0415
    from ..models.checkpoint import file_sha256, read_checkpoint_file  # noqa: PLC0415

    path = args.checkpoint or starter_model_path()
    meta = read_checkpoint_file(path)["meta"]
    if args.json:
        print(json.dumps(meta, indent=1, default=str))
        return 0
    arch = meta["architecture"]
    print(f"checkpoint: {path} ({path.stat().st_size / 1e6:.1f} MB, sha256 {file_sha256(path)[:12]})")
    print(f"detector:   {arch['detector']} on {arch['backbone']}, {arch['image_size']} px patches at "
          f"{meta['target_mpp']} um/px, weights {meta.get('weights_dtype', 'float32')}")
    print(f"classes:    {', '.join(meta['taxonomy'])}")
    print(f"loss:       {meta['loss']['name']}")
    for line in _training_lines(meta.get("training") or {}):
        print(line)
    for line in _card_lines(meta.get("model_card") or {}):
        print(line)
    print(_int8_line(path))
    print("metadata:   wsi model info --json" + (f" {path}" if args.checkpoint else ""))
    return 0


def _int8_line(path: Path) -> str:
    """Whether detection on the CPU can run this checkpoint in int8 (``inference/quantize.py``)."""
    from ..inference.quantize import find_calibration  # noqa: PLC0415
    from ..models.checkpoint import file_sha256  # noqa: PLC0415

    found = find_calibration(path, file_sha256(path))
    if found is None:
        return f"int8:       no calibration (make one: wsi model quantize {path} <training patches>)"
    calibration = found[1]
    return (f"int8:       {found[0].name} (calibrated on {calibration.get('calibration_images', '?')} images; scores "
            f"within {calibration.get('score_diff_p95', '?')} of fp32 at the 95th percentile)")


def _training_lines(training: dict) -> list[str]:
    """Epochs, iterations, data and the last validation mAP, instead of the whole training config."""
    if not training:
        return []
    def count(key: str) -> str:
        value = training.get(key, "?")
        return f"{value:,}" if isinstance(value, int) else str(value)

    lines = [f"training:   {count('epochs')} epochs, {count('iterations')} iterations on {count('num_images')} patches "
             f"({training.get('dataset', '?')})"]
    metrics = training.get("metrics") or {}
    if "map50_95" in metrics and "map50" in metrics:
        val_data = (training.get("config") or {}).get("val_data") or "validation set"
        lines.append(f"            last validation ({val_data}): mAP {metrics['map50_95']:.3f}, mAP50 {metrics['map50']:.3f}")
    return lines


def _card_lines(card: dict) -> list[str]:
    """The model card's name, intended use and one line per validation entry."""
    if not card:
        return []
    lines = [f"model card: {card.get('name', '(unnamed)')}"]
    lines += [f"            {card[key]}" for key in ("intended_use", "model_card") if card.get(key)]
    for name, value in (card.get("validation") or {}).items():
        lines.append(f"  {name}: {value}")
    return lines


def run_export(args: argparse.Namespace) -> int:
    from ..errors import ArtifactError  # noqa: PLC0415
    from ..models.checkpoint import export_checkpoint  # noqa: PLC0415

    card = None
    if args.card is not None:
        try:
            card = json.loads(args.card.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ArtifactError(args.card, f"model card must be a readable JSON file ({exc.__class__.__name__})") from None
    out = export_checkpoint(args.checkpoint, args.out, half=not args.fp32, model_card=card)
    print(f"{out} ({out.stat().st_size / 1e6:.1f} MB)")
    return 0
