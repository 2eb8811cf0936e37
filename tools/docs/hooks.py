"""mkdocs hooks: pages built from the library and the committed results, never pasted by hand.

* ``<!-- schemes-table -->`` becomes the table of ``contdepth schemes`` (every registered
  scheme's cost, order, stability interval and error constant, computed by the library);
* ``<!-- experiment-reports -->`` becomes the committed ``experiments/results/NAME/report.md``
  of every experiment (its tables, commands and plots), so the site shows exactly the numbers
  the experiment runner wrote;
* a page whose front matter says ``wide: true`` (the pages of wide tables) gets a marker that
  ``docs/stylesheets/tables.css`` widens the page for;
* the figures of the concept pages (``figures/*.png``) are drawn by ``figures.py`` beside
  this file, at build time, from the library itself (nothing generated lands in ``docs/``).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from mkdocs.structure.files import File

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
RESULTS = ROOT / "experiments" / "results"


def on_files(files, config):
    """The concept figures (drawn now) and the experiments' plots, as generated files of the site."""
    sys.path.insert(0, str(HERE))
    from figures import draw_all

    for name, png in draw_all().items():
        files.append(File.generated(config, f"figures/{name}", content=png))
    for plot in sorted(RESULTS.glob("*/plots/*.png")):
        uri = f"experiment-plots/{plot.parent.parent.name}/{plot.name}"
        files.append(File.generated(config, uri, abs_src_path=str(plot)))
    return files


def on_page_markdown(markdown: str, page, config, files) -> str:
    if "<!-- schemes-table -->" in markdown:
        markdown = markdown.replace("<!-- schemes-table -->", schemes_table())
    if "<!-- experiment-reports -->" in markdown:
        markdown = markdown.replace("<!-- experiment-reports -->", experiment_reports())
    return markdown


def on_page_content(html: str, page, config, files) -> str:
    """Mark a ``wide: true`` page: the stylesheet gives it the window's width (``body:has(...)``)."""
    if page.meta.get("wide") is True:
        return '<span class="cd-wide-page" hidden></span>\n' + html
    return html


def schemes_table() -> str:
    from contdepth.solvers import scheme_table

    def show(value) -> str:
        if value is None:
            return "-"
        if isinstance(value, float):
            return "inf" if value == float("inf") else f"{value:.4g}"
        return str(value)

    lines = ["| scheme | kind | evaluations per step | order | stable on [-r, 0]: r | error constant | modified equation |",
             "|---|---|---:|---:|---:|---:|---|"]
    for row in scheme_table():
        lines.append(f"| `{row.name}` | {row.kind} | {show(row.stages)} | {row.order} | "
                     f"{show(row.stability_interval)} | {show(row.error_constant)} | {show(row.modified_equation)} |")
    return "\n".join(lines)


def experiment_reports() -> str:
    parts = []
    for report in sorted(RESULTS.glob("*/report.md")):
        name = report.parent.name
        text = report.read_text(encoding="utf-8")
        text = re.sub(r"^(#+) ", lambda m: "#" + m.group(1) + " ", text, flags=re.M)  # one level down
        text = re.sub(r"`plots/([\w.-]+\.png)`", rf"![\1](experiment-plots/{name}/\1)", text)
        parts.append(text.strip())
    return "\n\n".join(parts) if parts else "No experiment results are committed yet."
