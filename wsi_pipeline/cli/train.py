"""`wsi train`: train a cell detector on a COCO patch dataset."""

from __future__ import annotations

import argparse
import logging

from .common import RESEARCH_NOTICE, HelpFormatter

log = logging.getLogger(__name__)

EPILOG = """examples:
  wsi train configs/train_demo.yaml --data demo_out/dataset --out runs/demo
  wsi train configs/longtail.yaml --data data/longtail/train --val-data data/longtail/val --loss gradlibra
  wsi train configs/train_demo.yaml --out runs/demo --resume      # continue after an interruption
  wsi data build --out data/lab --slide a.svs --annotations a.geojson  # your lab's annotations ...
  wsi train configs/finetune.yaml --data data/lab --out runs/lab       # ... fine-tune the starter model
  wsi train configs/finetune.yaml --data data/lab --data data/starter/train --out runs/lab2  # two sets together

The output folder gets last.pt (after every epoch), metrics.jsonl, config.yaml and, when training
has finished, model.pt (use it with `wsi detect --model` and `wsi evaluate`).

""" + RESEARCH_NOTICE


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("train", help="train a cell detector on a COCO patch dataset", description=__doc__,
                       epilog=EPILOG, formatter_class=HelpFormatter)
    p.add_argument("config", help="training config YAML (see configs/train_demo.yaml)")
    p.add_argument("--data", action="append", help="training dataset folder (overrides train_data; repeat to "
                                                  "train on several together)")
    p.add_argument("--val-data", help="validation dataset folder, evaluated after every epoch (overrides val_data)")
    p.add_argument("--out", help="output folder (overrides out)")
    p.add_argument("--loss", help="classification loss: bce, focal, eqlv2, efl, gradlibra or gradlibra_v2 (overrides loss.name)")
    p.add_argument("--epochs", type=int, help="number of epochs (overrides schedule.epochs)")
    p.add_argument("--seed", type=int, help="random seed (overrides seed)")
    p.add_argument("--device", help="auto, cpu, cuda or cuda:N (overrides device)")
    p.add_argument("--init-weights", help="fine-tune: start from 'starter' (the bundled model) or a model.pt "
                                          "(overrides init_weights)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last.pt")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (for log files)")
    p.set_defaults(func=run)
    return p


def overrides_from_args(args: argparse.Namespace) -> dict:
    over: dict = {}
    data = args.data[0] if args.data and len(args.data) == 1 else args.data
    for key, value in (("train_data", data), ("val_data", args.val_data), ("out", args.out),
                       ("seed", args.seed), ("device", args.device),
                       ("init_weights", args.init_weights)):
        if value is not None:
            over[key] = value
    if args.loss is not None:
        over["loss"] = {"name": args.loss}
    if args.epochs is not None:
        over["schedule"] = {"epochs": args.epochs}
    return over


def run(args: argparse.Namespace) -> int:
    from ..config import load_train_config  # noqa: PLC0415 (torch only when the command runs)
    from ..models.training import check_registry_names, train  # noqa: PLC0415

    cfg = load_train_config(args.config, overrides_from_args(args))
    check_registry_names(cfg, args.config)  # names of detector, backbone and loss, before any work
    result = train(cfg, resume=args.resume, progress=not args.no_progress)  # bar on a terminal, lines in a log
    print(result.model_path)
    return 0
