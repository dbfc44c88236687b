"""Self-contained HTML reports: one ``report.html`` per results folder.

A :class:`Report` collects sections and blocks (paragraphs, tables, figures, key-value lists,
image grids, code) and renders them with jinja2 (``templates/report.html.j2``) with autoescape
on: every string a user or a stimulus file can influence is escaped. Figures and images are
embedded as base64 data URIs; the page loads nothing from the network (a Content-Security-Policy
with ``default-src 'none'`` enforces it) and runs only its own small inline script (allowed by
hash), which sorts tables when a header is clicked and marks on ``<html>`` how many images
decoded (``data-images-ok`` / ``data-images-broken``) and how many script errors or policy
violations happened (``data-js-errors``), so a headless browser test can read them back.

Examples
--------
>>> rep = Report("Localizer: language", subtitle="MiniLM, stacked sheet",
...              command="topo localize ...")                      # doctest: +SKIP
>>> rep.add_section("Maps", "One-sided Welch t, sentences > non-words.")
>>> rep.add_figure(plot_sheet_map(t, sheet, "t map"), "t map; clusters outlined")
>>> rep.add_table(clusters, "Clusters (q < 0.05)", csv_name="clusters.csv")
>>> rep.save(path)  # or ResultsFolder.write_report(rep)
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import math
import numbers
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import jinja2

from topocli import __version__

TEMPLATE = "report.html.j2"
TEMPLATE_DIR = Path(__file__).with_name("templates")
FIGURE_DIR = "figures"
# the report's main column at its widest (layout 1280 - padding - contents - gap), CSS px:
# wider figures are shown scaled down to it
MAIN_WIDTH_PX = 934


def _csp_hash(text: Any) -> str:
    digest = hashlib.sha256(str(text).encode("utf-8")).digest()
    return "sha256-" + base64.b64encode(digest).decode("ascii")


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATE_DIR)),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["csp_hash"] = _csp_hash
    return env


def _formatter(float_format: str | Callable[[float], str]) -> Callable[[float], str]:
    if callable(float_format):
        return float_format
    if "%" in float_format and "{" not in float_format:
        return lambda v: float_format % v
    return lambda v: float_format.format(v)


def _is_missing(v: Any) -> bool:
    if v is None:
        return True
    try:
        return bool(v != v)  # NaN, pd.NA-safe enough for scalars
    except (TypeError, ValueError):
        return False


def format_value(v: Any, fmt: Callable[[float], str]) -> tuple[str, str, bool]:
    """(text shown, sort key, is numeric) of one table cell."""
    if _is_missing(v):
        return "—", "", False
    if isinstance(v, bool):
        return str(v), str(int(v)), True
    if isinstance(v, numbers.Integral):
        return str(int(v)), str(int(v)), True
    if isinstance(v, numbers.Real):
        x = float(v)
        if math.isinf(x):
            return ("∞" if x > 0 else "−∞"), ("Infinity" if x > 0 else "-Infinity"), True
        return fmt(x), repr(x), True
    return str(v), str(v), False


def _encode_image(image: Any, fmt: str = "png", max_px: int | None = None) -> tuple[str, int, int]:
    """A PIL image (or encoded PNG/JPEG bytes) as a data URI, with its pixel size."""
    from PIL import Image

    if isinstance(image, (bytes, bytearray)):
        image = Image.open(io.BytesIO(image))
        image.load()
    img = image.copy()
    if max_px:
        img.thumbnail((max_px, max_px))
    fmt = fmt.lower()
    if fmt in ("jpg", "jpeg"):
        fmt = "jpeg"
        if img.mode not in ("RGB", "L"):
            img = img.convert("RGB")
    elif img.mode not in ("RGB", "RGBA", "L", "LA", "P"):
        img = img.convert("RGBA")
    buf = io.BytesIO()
    img.save(buf, format=fmt.upper(), **({"quality": 88} if fmt == "jpeg" else {}))
    uri = f"data:image/{fmt};base64," + base64.b64encode(buf.getvalue()).decode("ascii")
    return uri, img.width, img.height


class Report:
    """Builder of a self-contained HTML report.

    Parameters
    ----------
    title : str
    subtitle : str, optional
    command : str, optional
        The command line that produced it, shown in the header.
    created : str, optional
        Creation time (default: now, UTC ISO; honours ``SOURCE_DATE_EPOCH``).
    """

    def __init__(
        self,
        title: str,
        subtitle: str | None = None,
        command: str | None = None,
        created: str | None = None,
    ) -> None:
        from topocli.reporting.results import utc_now_iso

        self.title = str(title)
        self.subtitle = None if subtitle is None else str(subtitle)
        self.command = None if command is None else str(command)
        self.created = created or utc_now_iso()
        self.preamble: list[dict[str, Any]] = []
        self.sections: list[dict[str, Any]] = []
        self.summary: dict[str, Any] | None = None
        self.sources: list[dict[str, Any]] = []
        self._ids: set[str] = set()
        self._n_tables = 0
        self._export_figures = False
        self._figures: list[dict[str, Any]] = []
        self._figure_names: set[str] = set()
        self._n_viewers = 0

    # ------------------------------------------------------------------ structure
    def _anchor(self, title: str) -> str:
        base = re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")[:40] or "section"
        anchor, k = base, 2
        while anchor in self._ids:
            anchor, k = f"{base}-{k}", k + 1
        self._ids.add(anchor)
        return anchor

    def _blocks(self) -> list[dict[str, Any]]:
        return self.sections[-1]["blocks"] if self.sections else self.preamble

    def add_section(self, title: str, text: str | None = None, level: int = 2) -> str:
        """Start a section (``level`` 2) or sub-section (3); later blocks go into it.

        Returns the section's anchor id (link to it with ``#id``).
        """
        if level not in (2, 3):
            raise ValueError("section level must be 2 or 3")
        anchor = self._anchor(str(title))
        self.sections.append({"id": anchor, "title": str(title), "level": level, "blocks": []})
        if text:
            self.add_paragraph(text)
        return anchor

    def add_subsection(self, title: str, text: str | None = None) -> str:
        """:meth:`add_section` at level 3."""
        return self.add_section(title, text, level=3)

    # ------------------------------------------------------------------ blocks
    def add_paragraph(self, text: str) -> None:
        """Plain text; blank lines separate paragraphs."""
        for para in re.split(r"\n\s*\n", str(text).strip()):
            if para:
                self._blocks().append({"kind": "paragraph", "text": para})

    def add_note(self, text: str, level: str = "info") -> None:
        """A highlighted call-out: ``level`` is ``info``, ``warning`` or ``error``."""
        if level not in ("info", "warning", "error"):
            raise ValueError("note level must be info, warning or error")
        self._blocks().append({"kind": "note", "text": str(text), "level": level})

    def add_table(
        self,
        df: Any,
        caption: str | None = None,
        max_rows: int | None = 200,
        float_format: str | Callable[[float], str] = "{:.4g}",
        index: bool = False,
        csv_name: str | None = None,
        first: Sequence[str] = (),
    ) -> None:
        """A sortable table from a pandas DataFrame.

        Parameters
        ----------
        df : pandas.DataFrame
        caption : str, optional
        max_rows : int or None
            Show at most this many rows (a note says how many there are).
        float_format : str or callable
            ``"{:.4g}"``-style, ``"%.3f"``-style or a function of a float. Sorting uses the
            exact values whatever the format.
        index : bool
            Include the index as the first column(s).
        csv_name : str, optional
            Relative path of the full table in the results folder; linked under the table.
        first : sequence of str
            The decisive columns, moved to the front (in this order) so they stay in view
            when a wide table scrolls sideways; the first one also stays put while it scrolls.
        """
        fmt = _formatter(float_format)
        frame = df.reset_index() if index else df
        lead = [c for c in first if c in frame.columns]
        if lead:
            frame = frame[lead + [c for c in frame.columns if c not in lead]]
        n_total = len(frame)
        shown = frame if max_rows is None else frame.head(max_rows)
        columns = [str(c) for c in frame.columns]
        numeric = [
            frame[c].dtype.kind in "iufb" if hasattr(frame[c], "dtype") else False
            for c in frame.columns
        ]
        rows = []
        for values in shown.itertuples(index=False, name=None):
            rows.append([format_value(v, fmt)[:2] for v in values])
        self._n_tables += 1
        self._blocks().append(
            {
                "kind": "table",
                "id": f"table-{self._n_tables}",
                "caption": None if caption is None else str(caption),
                "columns": columns,
                "numeric": numeric,
                "rows": rows,
                "n_total": n_total,
                "n_shown": len(rows),
                "csv_name": csv_name,
            }
        )

    def add_figure(
        self,
        fig: Any,
        caption: str | None = None,
        dpi: int = 150,
        fmt: str = "png",
        name: str | None = None,
    ) -> None:
        """Embed a matplotlib Figure as a base64 PNG (or SVG) data URI.

        The figure is also kept as a file for papers: ``figures/<name>.png``, plus ``.svg``
        when the figure is vector only (no raster image inside, so the SVG stays small).
        :meth:`ResultsFolder.write_report <topocli.reporting.results.ResultsFolder.write_report>`
        writes them beside the report and the caption links them.

        Parameters
        ----------
        fig : matplotlib.figure.Figure
        caption : str, optional
        dpi : int
        fmt : {"png", "svg"}
            How it is embedded in the page.
        name : str, optional
            File stem (default: from the caption, numbered).
        """
        from topocli.reporting.plotting import figure_to_bytes

        data = figure_to_bytes(fig, fmt=fmt, dpi=dpi)
        mime = "image/svg+xml" if fmt == "svg" else f"image/{fmt}"
        if fmt == "png":  # shown at its physical size: pixels * 96 / dpi CSS px
            from PIL import Image

            with Image.open(io.BytesIO(data)) as im:
                w_in, h_in = im.width / dpi, im.height / dpi
        else:
            w_in, h_in = fig.get_size_inches()
        stem = self._figure_stem(name or caption or "figure")
        files = {"png": data if fmt == "png" else figure_to_bytes(fig, fmt="png", dpi=dpi)}
        if not any(ax.images for ax in fig.axes):
            files["svg"] = data if fmt == "svg" else figure_to_bytes(fig, fmt="svg", dpi=dpi)
        links = []
        for ext, content in files.items():
            rel = f"{FIGURE_DIR}/{stem}.{ext}"
            self._figures.append({"path": rel, "data": content})
            links.append((ext.upper(), rel))
        self._blocks().append(
            {
                "kind": "figure",
                "src": f"data:{mime};base64," + base64.b64encode(data).decode("ascii"),
                "caption": None if caption is None else str(caption),
                "width": round(float(w_in) * 96),
                "height": round(float(h_in) * 96),
                "files": links,
            }
        )

    def _figure_stem(self, text: str) -> str:
        base = re.sub(r"[^a-z0-9]+", "-", str(text).lower()).strip("-")[:40].strip("-")
        stem = f"{len(self._figure_names) + 1:02d}-{base or 'figure'}"
        self._figure_names.add(stem)
        return stem

    def figure_files(self) -> list[tuple[str, bytes]]:
        """``(relative path, bytes)`` of every figure, for writing beside the report.

        Calling it marks the figures as exported: the rendered captions then link the files.
        """
        self._export_figures = True
        return [(f["path"], f["data"]) for f in self._figures]

    def set_summary(self, summary: Mapping[str, Any]) -> None:
        """The command's printed summary, machine-readable (written as ``summary.json``)."""
        self.summary = dict(summary)

    def set_sources(self, links: Sequence[Mapping[str, Any]]) -> None:
        """Links to the reports of the results folders this one was made from.

        Each link is a mapping with ``href`` (relative), ``folder``, ``command`` and ``input``
        (see :func:`topocli.reporting.results.source_links`).
        """
        self.sources = [dict(link) for link in links]

    def add_sheet_viewer(
        self,
        sheet: Any,
        maps: Sequence[Mapping[str, Any]],
        caption: str | None = None,
    ) -> None:
        """An interactive sheet: hover a unit to read its area, row/col, mm, t, q and cluster.

        Drawn on a canvas by the report's own inline script from data embedded in the page
        (float16 and int16 arrays in base64): nothing is fetched.

        Parameters
        ----------
        sheet : Sheet
        maps : sequence of mapping
            One per selectable map: ``name`` and ``t`` (per unit), optionally ``q`` and
            ``cluster`` (0 or NaN: none).
        caption : str, optional
        """
        from topocli.reporting.viewer import viewer_payload

        self._n_viewers += 1
        self._blocks().append(
            {
                "kind": "viewer",
                "id": f"viewer-{self._n_viewers}",
                "data": viewer_payload(sheet, maps),
                "caption": None if caption is None else str(caption),
            }
        )

    def add_image(self, image: Any, caption: str | None = None, max_px: int | None = None) -> None:
        """Embed one PIL image (or PNG/JPEG bytes) as a figure (also kept as ``figures/*.png``)."""
        src, w, h = _encode_image(image, "png", max_px)
        rel = f"{FIGURE_DIR}/{self._figure_stem(caption or 'image')}.png"
        self._figures.append({"path": rel, "data": base64.b64decode(src.split(",", 1)[1])})
        self._blocks().append(
            {
                "kind": "figure",
                "src": src,
                "caption": None if caption is None else str(caption),
                "width": w,
                "height": h,
                "files": [("PNG", rel)],
            }
        )

    def add_key_values(self, items: Mapping[str, Any], caption: str | None = None) -> None:
        """A two-column list of settings or summary numbers."""
        pairs = []
        for k, v in items.items():
            if isinstance(v, (Mapping, list, tuple)):
                from topocli.reporting.results import to_jsonable

                text = json.dumps(to_jsonable(v), ensure_ascii=False)
            else:
                text = format_value(v, _formatter("{:.6g}"))[0]
            pairs.append((str(k), text))
        self._blocks().append(
            {"kind": "kv", "pairs": pairs, "caption": None if caption is None else str(caption)}
        )

    def add_image_grid(
        self,
        images: Sequence[Any],
        labels: Sequence[str] | None = None,
        caption: str | None = None,
        thumb_px: int = 128,
        fmt: str = "png",
    ) -> None:
        """Thumbnails in a grid (e.g. a cluster's exemplar stimuli).

        Parameters
        ----------
        images : sequence of PIL images (or encoded bytes), or of ``(image, label)`` pairs
        labels : sequence of str, optional
        caption : str, optional
        thumb_px : int
            Longest side of each thumbnail in pixels.
        fmt : {"png", "jpeg"}
        """
        items = []
        for i, item in enumerate(images):
            label = None
            if isinstance(item, tuple):
                item, label = item
            if labels is not None:
                label = labels[i]
            src, w, h = _encode_image(item, fmt, thumb_px)
            items.append({"src": src, "label": None if label is None else str(label)})
        self._blocks().append(
            {
                "kind": "grid",
                "images": items,
                "caption": None if caption is None else str(caption),
                "px": int(thumb_px),
            }
        )

    def add_code(self, text: str, caption: str | None = None) -> None:
        """Preformatted text (a command line, a config, a log excerpt)."""
        self._blocks().append(
            {"kind": "code", "text": str(text), "caption": None if caption is None else caption}
        )

    def add_file_list(self, names: Sequence[str], title: str = "Files") -> None:
        """A section listing files of the results folder as relative links."""
        self.add_section(title)
        self._blocks().append({"kind": "files", "names": [str(n) for n in names]})

    # ------------------------------------------------------------------ output
    def render(self) -> str:
        """The complete HTML page as a string."""
        template = _environment().get_template(TEMPLATE)
        return template.render(
            title=self.title,
            subtitle=self.subtitle,
            command=self.command,
            created=self.created,
            version=__version__,
            preamble=self.preamble,
            sections=self.sections,
            sources=self.sources,
            link_figures=self._export_figures,
        )

    def save(self, path: str | Path) -> Path:
        """Render and write atomically to ``path``."""
        from topocli.reporting.results import atomic_write_text

        return atomic_write_text(path, self.render())
