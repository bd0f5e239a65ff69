"""Render a sidenet-bench results JSON into a Markdown report with plots."""

from sidenet.report import systems  # noqa: F401  (registers the built-in exit-system readings)
from sidenet.report.publish import write_report
from sidenet.report.render import render_markdown

__all__ = ["render_markdown", "write_report"]
