"""Render a sidenet-bench results JSON into a Markdown report with plots."""

from sidenet.report.render import render_markdown, write_report

__all__ = ["render_markdown", "write_report"]
