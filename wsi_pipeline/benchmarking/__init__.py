"""Shared helpers of the scripts in ``benchmarks/``: where the real data lies, the real validation fields,
images cut from them, and the paired-seed statistics of the loss benchmarks.

``benchmarks/<name>.py`` are thin command-line scripts (``python benchmarks/<name>.py --help``); what two or
more of them use lives here, so no script imports another and none edits ``sys.path``. This subpackage is the
top layer: it may import any stage of the pipeline, and nothing in ``wsi_pipeline`` imports it. It reads
data from the project checkout (``configs/``, ``../shared/data``), so it is meant for a checkout installed
with ``pip install -e .``, like ``configs/`` itself (:data:`wsi_pipeline.taxonomy.CONFIG_DIR`).

Modules:
    real_fields  the validation fields (CRIC, ``tct_marked``) run through the whole pipeline and scored
    images       real-field images: read as RGB, the TCT field resampled to 0.5 um/px, windows around points
    second_look  a detector's run folders re-scored offline and judged against the detector alone
    stats        per-seed means, paired deltas with bootstrap intervals, rare classes, loss statistics
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..models.bundled import starter_model_path
from ..taxonomy import CONFIG_DIR

PROJECT = CONFIG_DIR.parent
RESULTS = PROJECT / "benchmarks" / "results"  # default output folder of the scripts
SHARED_DATA = PROJECT.parent / "shared" / "data"  # the real test data beside the checkout (absent: scripts say so)
CYTOLOGY = SHARED_DATA / "cytology"
CRIC_SPLIT = CONFIG_DIR / "splits" / "cric.csv"  # the committed train / validation split of the CRIC fields


def portable_path(path: str | Path) -> str:
    """``path`` as records that other machines read name it: relative to the project (the bundled model by its
    place in the package, also when run from another checkout), else its file name alone.

    Example:
        >>> portable_path(PROJECT / "runs" / "a" / "model.pt")
        'runs/a/model.pt'
    """
    resolved = Path(path).resolve()
    if resolved.name == starter_model_path().name:
        return str(starter_model_path().relative_to(PROJECT))
    return str(resolved.relative_to(PROJECT)) if resolved.is_relative_to(PROJECT) else resolved.name


def write_record(path: Path | None, record: Any, indent: int = 2) -> None:
    """A script's ``--json`` record written to ``path`` (folders created; values JSON does not know as text);
    nothing when ``path`` is ``None``.

    Example:
        >>> import tempfile
        >>> out = Path(tempfile.mkdtemp()) / "a" / "r.json"
        >>> write_record(out, {"model": Path("m.pt")}); json.loads(out.read_text())
        {'model': 'm.pt'}
    """
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=indent, default=str))
