"""Figures of sheet maps, layouts, fROI profiles and curves (matplotlib, Agg, no pyplot).

Every function returns a :class:`matplotlib.figure.Figure` built directly (no pyplot global
state, nothing to close, safe in threads and tests). Sheet maps are drawn in millimetres: the
unit at grid cell ``(row, col)`` is centred at ``x = col * mm_per_unit``, ``y = row *
mm_per_unit`` with row 0 at the top (the first stage of a stacked sheet on top). Cells with no
unit are light grey.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection
from matplotlib.colors import ListedColormap, to_rgb
from matplotlib.figure import Figure
from matplotlib.patches import Patch, Rectangle

NO_UNIT_COLOR = "#d9d9d9"
STREAM_COLORS = (
    "#4e79a7",
    "#f28e2b",
    "#59a14f",
    "#e15759",
    "#76b7b2",
    "#edc948",
    "#b07aa1",
    "#9c755f",
)
MAP_MAX_W_IN = 6.4
MAP_MAX_H_IN = 7.5
# reports show a figure at 96 CSS px per inch, scaled down to the page's main column when it is
# wider: figures stay below FIGURE_MAX_W_IN and no text is below SMALL_PT (8.5 pt = 11.3 px)
FIGURE_MAX_W_IN = 9.5
SMALL_PT = 8.5
CSS_PX_PER_IN = 96


# ---------------------------------------------------------------------- basics
def new_figure(figsize: tuple[float, float] = (6.4, 4.8), **kwargs: Any) -> Figure:
    """A Figure with an Agg canvas and constrained layout, independent of pyplot."""
    fig = Figure(figsize=figsize, layout="constrained", **kwargs)
    FigureCanvasAgg(fig)
    return fig


def figure_to_bytes(fig: Figure, fmt: str = "png", dpi: int = 150) -> bytes:
    """Encode a figure as PNG, SVG or PDF bytes; the same figure gives the same bytes."""
    fmt = fmt.lower()
    meta: dict[str, Any] = {
        "png": {"Software": None},
        "svg": {"Date": None, "Creator": None},
        "pdf": {"CreationDate": None, "Creator": None, "Producer": None},
    }.get(fmt, {})
    if not meta:
        raise ValueError(f"unsupported figure format {fmt!r} (png, svg or pdf)")
    buf = io.BytesIO()
    with matplotlib.rc_context({"svg.hashsalt": "topo", "svg.fonttype": "path"}):
        fig.savefig(
            buf,
            format=fmt,
            dpi=dpi,
            metadata=meta,
            facecolor="white",
            bbox_inches="tight",
            pad_inches=0.08,
        )
    return buf.getvalue()


def smallest_text_px(fig: Figure, shown_width_px: float | None = None) -> float:
    """The smallest visible text of a figure in CSS pixels, as a report shows it.

    Parameters
    ----------
    fig : Figure
    shown_width_px : float, optional
        The widest the page shows a figure (wider ones are scaled down); default: no limit.
    """
    fig.canvas.draw()  # lays out constrained figures and creates tick labels
    width_px = fig.get_size_inches()[0] * CSS_PX_PER_IN
    scale = 1.0 if not shown_width_px else min(1.0, shown_width_px / width_px)
    sizes = [
        t.get_fontsize()
        for t in fig.findobj(lambda a: hasattr(a, "get_text") and hasattr(a, "get_fontsize"))
        if t.get_visible() and str(t.get_text()).strip()
    ]
    return min(sizes, default=np.inf) * CSS_PX_PER_IN / 72.0 * scale


def figure_to_png_bytes(fig: Figure, dpi: int = 150) -> bytes:
    """PNG bytes of a figure at ``dpi``."""
    return figure_to_bytes(fig, "png", dpi)


def short_name(name: str, max_len: int = 18) -> str:
    """A short area label: common model prefixes dropped, long names cut in the middle.

    ``encoder.layer.3.output`` -> ``layer.3.output``; ``model.layers.11`` -> ``layers.11``.
    """
    parts = name.split(".")
    drop = {"model", "encoder", "decoder", "transformer", "thinker", "base_model", "backbone"}
    while len(parts) > 2 and parts[0] in drop:
        parts = parts[1:]
    s = ".".join(parts)
    if len(s) <= max_len:
        return s
    keep = max_len - 1
    return s[: keep - keep // 2] + "…" + s[len(s) - keep // 2 :]


def display_stretch(sheet: Any, max_ratio: float = 4.0) -> float:
    """Vertical stretch applied to very elongated sheets so they stay readable (1 = to scale).

    A sheet more than ``max_ratio`` times wider than tall (or taller than wide) is drawn with
    its y axis stretched (or squeezed) to that ratio; the y label says so.
    """
    rows, cols = sheet.grid_shape
    aspect = rows / max(cols, 1)
    if aspect < 1 / max_ratio:
        return (1 / max_ratio) / aspect
    if aspect > max_ratio:
        return max_ratio / aspect
    return 1.0


def _map_figsize(sheet: Any, extra_w: float = 1.3, extra_h: float = 0.7) -> tuple[float, float]:
    rows, cols = sheet.grid_shape
    aspect = rows / max(cols, 1) * display_stretch(sheet)
    w = MAP_MAX_W_IN
    h = w * aspect
    if h > MAP_MAX_H_IN:
        h = MAP_MAX_H_IN
        w = h / aspect
    return (max(w, 2.0) + extra_w, max(h, 1.2) + extra_h)


def _finish_axes(ax: Any, sheet: Any) -> None:
    rows, cols = sheet.grid_shape
    mm = float(sheet.mm_per_unit)
    stretch = display_stretch(sheet)
    ax.set_aspect(stretch)
    ax.set_xlim(-0.5 * mm, (cols - 0.5) * mm)
    ax.set_ylim((rows - 0.5) * mm, -0.5 * mm)
    ax.set_xlabel("x (mm)")
    ax.set_ylabel("y (mm)" if stretch == 1.0 else f"y (mm, drawn ×{stretch:.3g})")


def _extent(sheet: Any) -> tuple[float, float, float, float]:
    rows, cols = sheet.grid_shape
    mm = float(sheet.mm_per_unit)
    return (-0.5 * mm, (cols - 0.5) * mm, (rows - 0.5) * mm, -0.5 * mm)


def _color_limits(
    values: np.ndarray, symmetric: bool, vmin: float | None, vmax: float | None
) -> tuple[float, float]:
    finite = values[np.isfinite(values)]
    if symmetric:
        if vmax is None:
            vmax = float(np.abs(finite).max()) if finite.size else 1.0
            vmax = vmax if vmax > 0 else 1.0
        return -float(vmax), float(vmax)
    lo = float(finite.min()) if finite.size else 0.0
    hi = float(finite.max()) if finite.size else 1.0
    lo = lo if vmin is None else float(vmin)
    hi = hi if vmax is None else float(vmax)
    if hi <= lo:
        hi = lo + 1.0
    return lo, hi


def _label_colorbar(cb: Any, label: str) -> None:
    if len(label) <= 3:  # "t", "d", "q": upright reads better
        cb.ax.set_title(label, fontsize=10, loc="left")
    else:
        cb.set_label(label)


# ---------------------------------------------------------------------- sheet maps
def label_edges(label_grid: np.ndarray) -> np.ndarray:
    """Cell-edge segments outlining every labelled region of a grid.

    Parameters
    ----------
    label_grid : ndarray of int, shape (rows, cols)
        0 = background, k > 0 = region k.

    Returns
    -------
    ndarray of shape (n_segments, 2, 2)
        Segments ``[(x0, y0), (x1, y1)]`` in grid units (cell ``(r, c)`` spans
        ``c - 0.5 .. c + 0.5`` and ``r - 0.5 .. r + 0.5``) on every border between cells of
        different labels where at least one label is > 0.
    """
    lab = np.asarray(label_grid)
    p = np.pad(lab, 1, constant_values=0)
    a, b = p[:-1, 1:-1], p[1:, 1:-1]  # vertical neighbours (row i-1 vs i), real columns
    r, c = np.nonzero((a != b) & (np.maximum(a, b) > 0))
    y = r - 0.5
    horiz = np.stack([np.stack([c - 0.5, y], 1), np.stack([c + 0.5, y], 1)], 1)
    a, b = p[1:-1, :-1], p[1:-1, 1:]  # horizontal neighbours
    r, c = np.nonzero((a != b) & (np.maximum(a, b) > 0))
    x = c - 0.5
    vert = np.stack([np.stack([x, r - 0.5], 1), np.stack([x, r + 0.5], 1)], 1)
    return np.concatenate([horiz, vert]).astype(np.float64).reshape(-1, 2, 2)


def draw_sheet_map(
    ax: Any,
    values_units: np.ndarray,
    sheet: Any,
    title: str | None = None,
    cmap: str = "RdBu_r",
    symmetric: bool = True,
    outline_labels: np.ndarray | None = None,
    area_boundaries: bool = True,
    vmin: float | None = None,
    vmax: float | None = None,
    area_labels: bool = True,
    annotate_clusters: bool = True,
) -> Any:
    """Draw a sheet map on an existing Axes; returns the image (for a colorbar).

    See :func:`plot_sheet_map` for the parameters.
    """
    values = np.asarray(values_units, dtype=np.float64)
    if values.shape != (sheet.n_units,):
        raise ValueError(f"expected ({sheet.n_units},) values, got {values.shape}")
    grid = sheet.to_grid(values)
    lo, hi = _color_limits(values, symmetric, vmin, vmax)
    cm = matplotlib.colormaps[cmap].with_extremes(bad=NO_UNIT_COLOR)
    im = ax.imshow(
        np.ma.masked_invalid(grid),
        cmap=cm,
        vmin=lo,
        vmax=hi,
        extent=_extent(sheet),
        origin="upper",
        interpolation="nearest",
        aspect="equal",
    )
    ax.set_facecolor(NO_UNIT_COLOR)
    if area_boundaries:
        _draw_area_boxes(ax, sheet, labels=area_labels)
    if outline_labels is not None:
        _draw_outlines(ax, np.asarray(outline_labels), sheet, annotate_clusters)
    _finish_axes(ax, sheet)
    if title:
        ax.set_title(title, fontsize=10)
    return im


def _draw_area_boxes(ax: Any, sheet: Any, labels: bool = True, fontsize: float = SMALL_PT) -> None:
    mm = float(sheet.mm_per_unit)
    for area in sheet.areas:
        x0, y0 = (area.col0 - 0.5) * mm, (area.row0 - 0.5) * mm
        ax.add_patch(
            Rectangle(
                (x0, y0),
                area.cols * mm,
                area.rows * mm,
                fill=False,
                edgecolor="#333333",
                linewidth=0.7,
                linestyle="--",
            )
        )
        if labels:
            ax.text(
                x0 + 0.6 * mm,
                y0 + 0.6 * mm,
                short_name(area.name),
                fontsize=fontsize,
                va="top",
                ha="left",
                color="#222222",
                clip_on=True,
                bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.7},
            )


def _draw_outlines(ax: Any, labels: np.ndarray, sheet: Any, annotate: bool) -> None:
    if labels.shape != (sheet.n_units,):
        raise ValueError(f"outline_labels must have shape ({sheet.n_units},), got {labels.shape}")
    lab = np.nan_to_num(labels.astype(np.float64), nan=0.0).astype(np.int64)
    grid = sheet.to_grid(lab, fill=0)
    segs = label_edges(grid) * float(sheet.mm_per_unit)
    if len(segs) == 0:
        return
    ax.add_collection(LineCollection(segs, colors="white", linewidths=2.4, capstyle="round"))
    ax.add_collection(LineCollection(segs, colors="black", linewidths=1.1, capstyle="round"))
    ids = np.unique(lab[lab > 0])
    if annotate and 0 < ids.size <= 40:
        for k in ids:
            sel = np.flatnonzero(lab == k)
            cx, cy = sheet.x_mm[sel].mean(), sheet.y_mm[sel].mean()
            near = sel[np.argmin((sheet.x_mm[sel] - cx) ** 2 + (sheet.y_mm[sel] - cy) ** 2)]
            ax.text(
                sheet.x_mm[near],
                sheet.y_mm[near],
                str(int(k)),
                fontsize=SMALL_PT,
                ha="center",
                va="center",
                fontweight="bold",
                color="black",
                bbox={"boxstyle": "circle,pad=0.15", "fc": "white", "ec": "black", "lw": 0.6},
            )


def plot_sheet_map(
    values_units: np.ndarray,
    sheet: Any,
    title: str = "",
    cmap: str = "RdBu_r",
    symmetric: bool = True,
    outline_labels: np.ndarray | None = None,
    area_boundaries: bool = True,
    colorbar_label: str = "t",
    vmin: float | None = None,
    vmax: float | None = None,
    area_labels: bool = True,
    annotate_clusters: bool = True,
) -> Figure:
    """One sheet map in mm with area boxes, cluster outlines and a colorbar.

    Parameters
    ----------
    values_units : ndarray of shape (n_units,)
        One value per sheet unit (NaN allowed).
    sheet : Sheet
    title : str
    cmap : str
        Matplotlib colormap; cells with no unit (and NaN values) are light grey.
    symmetric : bool
        Colour limits ``[-m, m]`` with ``m = max |value|`` (or ``vmax``) so 0 is the midpoint.
    outline_labels : ndarray of int of shape (n_units,), optional
        Cluster label per unit (0 = none); every labelled region is outlined along cell edges
        and its number written at its centroid (when ``annotate_clusters``). A boolean mask works
        too (one region label).
    area_boundaries : bool
        Draw each area's box and short name.
    colorbar_label : str
    vmin, vmax : float, optional
        Fixed colour limits (``vmax`` alone when symmetric).
    """
    fig = new_figure(_map_figsize(sheet))
    ax = fig.add_subplot()
    im = draw_sheet_map(
        ax,
        values_units,
        sheet,
        title,
        cmap,
        symmetric,
        outline_labels,
        area_boundaries,
        vmin,
        vmax,
        area_labels,
        annotate_clusters,
    )
    cb = fig.colorbar(im, ax=ax, shrink=0.8, pad=0.02)
    _label_colorbar(cb, colorbar_label)
    return fig


def plot_sheet_maps(
    maps: Sequence[tuple[np.ndarray, str]],
    sheet: Any,
    ncols: int = 3,
    cmap: str = "RdBu_r",
    symmetric: bool = True,
    shared_scale: bool = False,
    outline_labels: Sequence[np.ndarray | None] | None = None,
    colorbar_label: str = "t",
    area_labels: bool = False,
    suptitle: str | None = None,
) -> Figure:
    """Small multiples: one panel per ``(values, title)``, each with its own colorbar.

    With ``shared_scale`` all panels use one colour range (and the last panel's colorbar).
    """
    if not maps:
        raise ValueError("plot_sheet_maps needs at least one map")
    n = len(maps)
    ncols = max(1, min(ncols, n))
    nrows = -(-n // ncols)
    pw, ph = _map_figsize(sheet, extra_w=0.9, extra_h=0.6)
    scale = min(1.0, FIGURE_MAX_W_IN / (pw * ncols))
    fig = new_figure((pw * ncols * scale, ph * nrows * scale + (0.4 if suptitle else 0)))
    axes = fig.subplots(nrows, ncols, squeeze=False)
    lims: tuple[float | None, float | None] = (None, None)
    if shared_scale:
        lims = _color_limits(np.concatenate([np.ravel(v) for v, _ in maps]), symmetric, None, None)
    for i, (values, title) in enumerate(maps):
        ax = axes[i // ncols][i % ncols]
        outline = outline_labels[i] if outline_labels is not None else None
        im = draw_sheet_map(
            ax,
            values,
            sheet,
            title,
            cmap,
            symmetric,
            outline,
            True,
            lims[0],
            lims[1],
            area_labels,
            False,
        )
        if not shared_scale or i == n - 1:
            cb = fig.colorbar(im, ax=ax, shrink=0.8, pad=0.02)
            _label_colorbar(cb, colorbar_label)
    for j in range(n, nrows * ncols):
        axes[j // ncols][j % ncols].set_visible(False)
    if suptitle:
        fig.suptitle(suptitle)
    return fig


# ---------------------------------------------------------------------- layout
def plot_layout(sheet: Any, title: str | None = None) -> Figure:
    """The sheet's layout: every area's box coloured by stream, with name, units and shape."""
    streams = list(dict.fromkeys(a.stream for a in sheet.areas))
    colors = [STREAM_COLORS[i % len(STREAM_COLORS)] for i in range(len(streams))]
    light = [tuple(0.55 + 0.45 * np.asarray(to_rgb(c))) for c in colors]
    area_colors = []
    seen: dict[str, int] = {}
    for a in sheet.areas:
        j = seen.get(a.stream, 0)
        seen[a.stream] = j + 1
        mix = 0.55 if j % 2 == 0 else 0.68
        area_colors.append(
            tuple(mix + (1 - mix) * np.asarray(to_rgb(colors[streams.index(a.stream)])))
        )
    grid = sheet.area_grid.astype(float)
    grid[grid < 0] = np.nan
    w, h = _map_figsize(sheet, extra_w=0.4, extra_h=0.9)
    fig = new_figure((w, h))
    ax = fig.add_subplot()
    cm = ListedColormap(area_colors).with_extremes(bad="white")
    mm = float(sheet.mm_per_unit)
    ax.imshow(
        np.ma.masked_invalid(grid),
        cmap=cm,
        vmin=-0.5,
        vmax=len(sheet.areas) - 0.5,
        extent=_extent(sheet),
        origin="upper",
        interpolation="nearest",
        aspect="equal",
    )
    rows, cols = sheet.grid_shape
    axes_h_pt = (h - 0.9) * 72.0
    for area in sheet.areas:
        color = colors[streams.index(area.stream)]
        x0, y0 = (area.col0 - 0.5) * mm, (area.row0 - 0.5) * mm
        ax.add_patch(
            Rectangle((x0, y0), area.cols * mm, area.rows * mm, fill=False, ec=color, lw=1.4)
        )
        box_pt = axes_h_pt * area.rows / rows
        box_w_pt = axes_h_pt * area.cols / rows / display_stretch(sheet)
        name = short_name(area.name, 22 if box_w_pt > 120 else 12)
        if box_pt >= 30:
            text = f"{name}\n{area.n_units} units\n{area.rows} × {area.cols}"
        elif box_pt >= 7:
            text = f"{name} · {area.n_units} units"
        else:
            text = ""
        if text:
            ax.text(
                x0 + area.cols * mm / 2,
                y0 + area.rows * mm / 2,
                text,
                ha="center",
                va="center",
                fontsize=7 if box_pt >= 30 else 6,
                color="#1a1a1a",
                clip_on=True,
            )
    _finish_axes(ax, sheet)
    ax.set_title(
        title
        or f"{sheet.layout} sheet: {rows} × {cols} grid, {sheet.n_units:,} units\n"
        f"{len(sheet.areas)} areas, {mm:g} mm per unit",
        fontsize=10,
    )
    handles = [Patch(fc=light[i], ec=colors[i], label=s) for i, s in enumerate(streams)]
    fig.legend(
        handles=handles,
        loc="outside lower center",
        ncol=min(len(streams), 4),
        fontsize=SMALL_PT,
        frameon=False,
        title="stream",
        title_fontsize=SMALL_PT,
    )
    return fig


# ---------------------------------------------------------------------- tables of numbers
def _mean_sem(df: Any, keys: list[str], y: str) -> Any:
    g = df.groupby(keys, sort=False)[y]
    out = g.agg(["mean", "std", "count"]).reset_index()
    out["sem"] = out["std"] / np.sqrt(out["count"])
    return out.rename(columns={"mean": y})


def plot_profile_bars(
    df: Any,
    x: str = "condition",
    y: str = "response",
    hue: str | None = None,
    err: str | None = None,
    title: str | None = None,
    xlabel: str | None = None,
    ylabel: str | None = None,
    figsize: tuple[float, float] | None = None,
) -> Figure:
    """Bar plot of an fROI response profile with SEM error bars.

    Parameters
    ----------
    df : pandas.DataFrame
        Either one row per (x, hue) with the mean in ``y`` and the error in ``err``, or raw
        observations (``err=None``): bars are then the mean of ``y`` per (x, hue) and error bars
        the SEM (sample SD / sqrt(n); none when n = 1).
    x, y, hue, err : str
        Column names; ``hue`` groups bars side by side (e.g. the fROI, or model vs human).
    """
    keys = [x] + ([hue] if hue else [])
    if err is None:
        tab = _mean_sem(df, keys, y)
        err_col = "sem"
    else:
        tab = df[keys + [y, err]].copy()
        err_col = err
    xs = list(dict.fromkeys(tab[x].tolist()))
    hues = list(dict.fromkeys(tab[hue].tolist())) if hue else [None]
    width = figsize[0] if figsize else max(3.5, 0.55 * len(xs) * max(1, len(hues)) + 1.8)
    fig = new_figure((min(width, FIGURE_MAX_W_IN), figsize[1] if figsize else 3.6))
    ax = fig.add_subplot()
    width = 0.8 / len(hues)
    pos = np.arange(len(xs), dtype=float)
    for j, hv in enumerate(hues):
        sub = tab if hv is None else tab[tab[hue] == hv]
        sub = sub.set_index(x).reindex(xs)
        ax.bar(
            pos - 0.4 + width * (j + 0.5),
            sub[y].to_numpy(dtype=float),
            width=width * 0.92,
            yerr=sub[err_col].to_numpy(dtype=float),
            capsize=3,
            color=STREAM_COLORS[j % len(STREAM_COLORS)],
            error_kw={"elinewidth": 1.0, "ecolor": "#333333"},
            label=None if hv is None else str(hv),
        )
    ax.axhline(0, color="#555555", lw=0.8)
    ax.set_xticks(pos, [str(v) for v in xs], rotation=30 if len(xs) > 4 else 0, ha="right")
    ax.set_xlabel(xlabel if xlabel is not None else x)
    ax.set_ylabel(ylabel if ylabel is not None else y)
    ax.spines[["top", "right"]].set_visible(False)
    ax.tick_params(labelsize=9)
    if hue:
        ax.legend(title=hue, fontsize=SMALL_PT, title_fontsize=SMALL_PT, frameon=False)
    if title:
        ax.set_title(title, fontsize=10)
    return fig


def plot_lines(
    df: Any,
    x: str,
    y: str,
    hue: str | None = None,
    err: str | None = None,
    title: str | None = None,
    xlabel: str | None = None,
    ylabel: str | None = None,
    logx: bool = False,
    logy: bool = False,
    markers: bool = True,
    figsize: tuple[float, float] = (5.5, 3.6),
) -> Figure:
    """Line plot, one line per ``hue`` level (loss curves, dose-response, corr vs distance).

    ``err`` names a column drawn as a shaded band ``y ± err``.
    """
    fig = new_figure((min(figsize[0], FIGURE_MAX_W_IN), figsize[1]))
    ax = fig.add_subplot()
    groups = [(None, df)] if hue is None else list(df.groupby(hue, sort=False))
    for j, (hv, sub) in enumerate(groups):
        sub = sub.sort_values(x)
        xv = sub[x].to_numpy(dtype=float)
        yv = sub[y].to_numpy(dtype=float)
        color = STREAM_COLORS[j % len(STREAM_COLORS)]
        ax.plot(
            xv,
            yv,
            marker="o" if markers and len(xv) <= 60 else None,
            ms=3.5,
            lw=1.5,
            color=color,
            label=None if hv is None else str(hv),
        )
        if err is not None:
            ev = sub[err].to_numpy(dtype=float)
            ax.fill_between(xv, yv - ev, yv + ev, color=color, alpha=0.2, lw=0)
    if logx:
        ax.set_xscale("log")
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel if xlabel is not None else x)
    ax.set_ylabel(ylabel if ylabel is not None else y)
    ax.spines[["top", "right"]].set_visible(False)
    ax.grid(True, color="#e5e5e5", lw=0.6)
    ax.tick_params(labelsize=9)
    if hue is not None:
        ax.legend(title=hue, fontsize=SMALL_PT, title_fontsize=SMALL_PT, frameon=False)
    if title:
        ax.set_title(title, fontsize=10)
    return fig
