"""Slide report and exports: report.json, report.html, cells.geojson (QuPath), cells.xml (ASAP), cells.csv."""

from .report import ReportPaths, build_report, filter_scanner_properties, write_report

__all__ = ["ReportPaths", "build_report", "filter_scanner_properties", "write_report"]
