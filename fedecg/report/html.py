"""A small builder of self-contained HTML pages: headings, text, tables, figures as data URIs.

Nothing on the page refers to another file or host: figures are embedded as base64 PNG, the
style sheet is inline, and there is no script. A report therefore opens offline and can be
mailed or archived as one file.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from pathlib import Path

from matplotlib.figure import Figure

from fedecg.io import SHARED, atomic_write_text

_STYLE = """
body { font-family: -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif; margin: 2em auto;
       max-width: 1240px; padding: 0 1em; color: #222; line-height: 1.45; }
h1 { border-bottom: 2px solid #345; padding-bottom: .2em; }
h2 { margin-top: 2em; border-bottom: 1px solid #ccc; padding-bottom: .1em; }
table { border-collapse: collapse; margin: 1em 0; font-size: .95em; }
th, td { border: 1px solid #ccc; padding: .35em .7em; text-align: left; }
th { background: #eef2f6; }
table.facts th { font-weight: 600; white-space: nowrap; }
table.facts td.num { text-align: left; }
h3 { margin-top: 1.4em; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
caption { caption-side: bottom; color: #555; font-size: .9em; padding-top: .4em; }
figure { margin: 1.2em 0; }
figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption { color: #555; font-size: .9em; }
pre { background: #f6f8fa; padding: .8em; overflow-x: auto; font-size: .85em; }
.note { color: #666; font-style: italic; }
"""


def figure_to_data_uri(figure: Figure, dpi: int = 110) -> str:
    """Render a matplotlib figure to a ``data:image/png;base64,...`` URI."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


class HtmlPage:
    """Blocks of HTML appended in order; ``render()`` returns the whole page.

    Every text argument is escaped, so labels and values from files cannot inject markup.
    """

    def __init__(self, title: str) -> None:
        self.title = title
        self._blocks: list[str] = [f"<h1>{html.escape(title)}</h1>"]

    def heading(self, text: str, level: int = 2) -> None:
        """Add a section heading (``level`` 2 or deeper)."""
        self._blocks.append(f"<h{level}>{html.escape(text)}</h{level}>")

    def paragraph(self, text: str, note: bool = False) -> None:
        """Add a paragraph; ``note`` renders it as a muted remark."""
        css = ' class="note"' if note else ""
        self._blocks.append(f"<p{css}>{html.escape(text)}</p>")

    def facts(self, rows: Sequence[tuple[str, object]], caption: str = "") -> None:
        """Add a two-column table of ``(name, value)`` rows, names as row headers."""
        body = "".join(f'<tr><th scope="row">{html.escape(name)}</th>{_cell(value)}</tr>'
                       for name, value in rows)
        cap = f"<caption>{html.escape(caption)}</caption>" if caption else ""
        self._blocks.append(f'<table class="facts">{cap}<tbody>{body}</tbody></table>')

    def links(self, text: str, targets: Sequence[tuple[str, str]]) -> None:
        """Add a paragraph ``text`` followed by links ``(label, relative href)``."""
        anchors = ", ".join(f'<a href="{html.escape(href, quote=True)}">{html.escape(label)}</a>'
                            for label, href in targets)
        self._blocks.append(f"<p>{html.escape(text)} {anchors}</p>")

    def preformatted(self, text: str, summary: str | None = None) -> None:
        """Add monospaced text, folded under ``summary`` when one is given."""
        block = f"<pre>{html.escape(text)}</pre>"
        if summary is not None:
            block = f"<details><summary>{html.escape(summary)}</summary>{block}</details>"
        self._blocks.append(block)

    def table(self, headers: Sequence[str], rows: Sequence[Sequence[object]],
              caption: str = "") -> None:
        """Add a table; numbers are right-aligned, floats shown with three decimals."""
        head = "".join(f"<th>{html.escape(str(h))}</th>" for h in headers)
        body = "".join(f"<tr>{''.join(_cell(value) for value in row)}</tr>" for row in rows)
        cap = f"<caption>{html.escape(caption)}</caption>" if caption else ""
        self._blocks.append(f"<table>{cap}<thead><tr>{head}</tr></thead>"
                            f"<tbody>{body}</tbody></table>")

    def figure(self, figure: Figure, caption: str = "", alt: str = "") -> None:
        """Embed a matplotlib figure as a PNG data URI, with an optional caption."""
        uri = figure_to_data_uri(figure)
        cap = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
        alt_text = html.escape(alt or caption or "figure", quote=True)
        self._blocks.append(f'<figure><img src="{uri}" alt="{alt_text}">{cap}</figure>')

    def render(self) -> str:
        """The complete page as one string."""
        body = "\n".join(self._blocks)
        return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
                f"<title>{html.escape(self.title)}</title><style>{_STYLE}</style></head>"
                f"<body>\n{body}\n</body></html>\n")

    def write(self, path: Path) -> Path:
        """Write the page atomically to ``path`` and return it."""
        atomic_write_text(Path(path), self.render(), SHARED)
        return Path(path)


def _cell(value: object) -> str:
    if _is_number(value):
        text = f"{value:.3f}" if isinstance(value, float) else str(value)
        return f'<td class="num">{html.escape(text)}</td>'
    return f"<td>{html.escape('—' if value is None else str(value))}</td>"
