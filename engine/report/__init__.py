"""The fit report: index.md + index.html (self-contained) + figures/*.png + fit.json.

    from engine.report import write_report
    write_report(out_dir, fit_result, table)
"""

from __future__ import annotations

from pathlib import Path

from engine.fit.findings import data_unit, derive_findings, flops_per_param_example, is_paper_t5
from engine.fit.fitting import objective_at
from engine.fit.io import ResultsTable
from engine.fit.result import FitResult
from engine.report.blocks import Block, Figure, to_html, to_markdown
from engine.report.content import report_blocks


def write_report(out_dir: Path, fit: FitResult, table: ResultsTable, write_fit_json: bool = True,
                 extra_blocks: list[Block] | None = None) -> Path:
    """Write the report for `fit` (made from `table`) into out_dir, with `extra_blocks` (a study's
    own sections) at the end; returns index.html's path."""
    from engine.fit import paper

    paper_objective = objective_at(table, paper.T5_C4, fit.settings) if is_paper_t5(table) else None
    findings = derive_findings(fit, table, data_unit(table), flops_per_param_example(table))
    blocks = report_blocks(fit, table, findings, paper_objective) + (extra_blocks or [])
    html_path = write_blocks(out_dir, blocks, "Sparse scaling-law fit")
    if write_fit_json:
        fit.write(out_dir / "fit.json", findings.to_json())
    return html_path


def write_blocks(out_dir: Path, blocks: list[Block], title: str) -> Path:
    """index.md, index.html and figures/*.png of a list of report blocks; returns index.html."""
    out_dir.mkdir(parents=True, exist_ok=True)
    figures_dir = out_dir / "figures"
    figures_dir.mkdir(exist_ok=True)
    for block in blocks:
        if isinstance(block, Figure):
            (figures_dir / block.name).write_bytes(block.png)
    (out_dir / "index.md").write_text(to_markdown(blocks))
    html_path = out_dir / "index.html"
    html_path.write_text(to_html(blocks, title))
    return html_path


__all__ = ["write_blocks", "write_report"]
