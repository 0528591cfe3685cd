"""The self-contained ``report.html``: one file, every picture embedded, no scripts, no network."""

from __future__ import annotations

from typing import Any

import jinja2

from .. import RESEARCH_NOTICE
from ..aggregate import SlideSummary
from ..taxonomy import Taxonomy
from .images import CellCrop, Overview, data_uri

_ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("wsi_pipeline.export", "templates"),
    autoescape=jinja2.select_autoescape(["html", "j2"]),
    trim_blocks=True,
    lstrip_blocks=True,
    undefined=jinja2.StrictUndefined,
)


def _number(value: float | int | None, digits: int = 2) -> str:
    """Format a count or measure for the page; ``None`` (unknown) becomes an en dash.

    Example:
        >>> _number(1234.5678), _number(None), _number(12)
        ('1,234.57', '–', '12')
    """
    if value is None:
        return "–"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:,.{digits}f}"


_ENV.filters["number"] = _number


def render_html(
    report: dict[str, Any], summary: SlideSummary, overview: Overview, crops: list[CellCrop], taxonomy: Taxonomy
) -> str:
    """Render the report page from the ``report.json`` document and the pictures."""
    crops_by_class: dict[str, list[CellCrop]] = {}
    for crop in crops:
        crops_by_class.setdefault(crop.cell.class_name, []).append(crop)
    category_colour = (taxonomy[summary.category.name].color if summary.category.name in taxonomy.names
                       else "#9E9E9E" if summary.category.severity < 0 else "#4CAF50")  # grey: not assessable
    return _ENV.get_template("report.html.j2").render(
        report=report,
        summary=summary,
        overview=overview,
        base_uri=data_uri("image/jpeg", overview.base_jpeg),
        overlay_uri=data_uri("image/png", overview.overlay_png),
        heatmap_uri=data_uri("image/png", overview.heatmap_png),
        crops_by_class=crops_by_class,
        gallery_classes=sorted((c for c in summary.classes if c.name in summary.top_cells), key=lambda c: -c.severity),
        category_colour=category_colour,
    )


def render_index(rows: list[dict[str, Any]], n_ok: int) -> str:
    """The batch ``index.html``: one row per slide (keys name, href, status, category, suspicion, adequacy,
    seconds, reason; all already formatted as text), with the research notice."""
    return _ENV.get_template("index.html.j2").render(rows=rows, n_ok=n_ok, notice=RESEARCH_NOTICE)


def render_dataset_preview(**fields: Any) -> str:
    """The contact sheet of a patch set (``wsi data preview``; fields: see ``datasets/preview.py``)."""
    return _ENV.get_template("dataset_preview.html.j2").render(notice=RESEARCH_NOTICE, **fields)
