"""The fit report: index.md + index.html (self-contained) + figures/*.png + fit.json.

    from engine.report import write_report
    write_report(out_dir, fit_result, table)
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from engine.fit.findings import data_unit, derive_findings, flops_per_param_example, is_paper_t5
from engine.fit.fitting import objective_at
from engine.fit.io import ResultsTable
from engine.fit.result import FitResult
from engine.report.blocks import Block, Figure, to_html, to_markdown
from engine.report.content import report_blocks

ReportFormat = Literal["markdown", "html"]
FORMATS: tuple[ReportFormat, ...] = ("markdown", "html")  # a spec's analysis.report.formats default
_INDEX = {"markdown": "index.md", "html": "index.html"}


def index_path(out_dir: Path, formats: Sequence[ReportFormat] = FORMATS) -> Path:
    """The report's main file: index.html when HTML is written, else index.md."""
    return out_dir / (_INDEX["html"] if "html" in formats else _INDEX["markdown"])


def write_report(
    out_dir: Path, fit: FitResult, table: ResultsTable, write_fit_json: bool = True,
    formats: Sequence[ReportFormat] = FORMATS, extra_blocks: list[Block] | None = None, own_table4: bool = True,
) -> Path:
    """Write the report for `fit` (made from `table`) into out_dir in `formats`, with `extra_blocks`
    (a study's own sections) at the end; returns its main file (index_path). `own_table4`: see
    engine.report.content.report_blocks."""
    from engine.fit import paper

    paper_objective = objective_at(table, paper.T5_C4, fit.settings) if is_paper_t5(table) else None
    findings = derive_findings(fit, table, data_unit(table), flops_per_param_example(table))
    blocks = report_blocks(fit, table, findings, paper_objective, own_table4) + (extra_blocks or [])
    main_file = write_blocks(out_dir, blocks, "Sparse scaling-law fit", formats)
    if write_fit_json:
        fit.write(out_dir / "fit.json", findings.to_json())
    return main_file


def write_blocks(out_dir: Path, blocks: list[Block], title: str, formats: Sequence[ReportFormat] = FORMATS) -> Path:
    """The report of a list of blocks in `formats`: index.md with figures/*.png beside it, and/or a
    self-contained index.html (figures embedded). The index of a format not asked for is removed,
    so the directory never holds a stale one from an earlier run. Returns index_path."""
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown or not formats:
        raise ValueError(f"report formats {list(formats)}: expected some of {', '.join(FORMATS)}")
    out_dir.mkdir(parents=True, exist_ok=True)
    if "markdown" in formats:
        figures_dir = out_dir / "figures"
        figures_dir.mkdir(exist_ok=True)
        for block in blocks:
            if isinstance(block, Figure):
                (figures_dir / block.name).write_bytes(block.png)
        (out_dir / _INDEX["markdown"]).write_text(to_markdown(blocks))
    if "html" in formats:
        (out_dir / _INDEX["html"]).write_text(to_html(blocks, title))
    for name in FORMATS:
        if name not in formats:
            (out_dir / _INDEX[name]).unlink(missing_ok=True)
    return index_path(out_dir, formats)


__all__ = ["FORMATS", "index_path", "write_blocks", "write_report"]
