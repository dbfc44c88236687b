"""The cortical sheet: every recorded unit's area, grid cell and position in millimetres.

A :class:`Sheet` is explicit and saved with a checkpoint, so training, localizing and plotting
all read the same unit -> position map (the anchors' code did not).

Layout rules
------------
``stacked`` (Topo-Omni): one contiguous sheet. Areas belong to *streams* (e.g. ``vision``,
``audio``, ``text``); streams are grouped into *stages* that run in parallel (encoders side by
side) and stages are stacked top to bottom in processing order. Inside a stream every area is a
band of ``ceil(n_units / stream_width)`` rows filled row-major, so an area whose size is not a
multiple of the width leaves the tail of its last row empty (NaN in maps). The sheet width
defaults to the smallest power of two >= sqrt(largest area) per stream, times the number of
streams in the widest stage: 384 units -> width 32 -> 12 x 32; 1280 -> 64 wide -> 20 x 64. Pass
``width`` to fix it (Topo-Omni: 512, so two towers of 1280 units sit side by side as 5 x 256 each
and a 2048-unit LM layer takes 4 x 512).

``tiled`` (TopoLM): one grid per area, kept apart by a one-unit gap. An area of ``n`` units is
``r x n/r`` with ``r`` the largest divisor of ``n`` not above ``sqrt(n)`` (784 -> 28 x 28,
384 -> 16 x 24); when that is too elongated (aspect > 4, e.g. a prime ``n``) a
``ceil(sqrt(n))``-wide grid with a partial last row is used instead. Tiles wrap into rows of
``ceil(sqrt(n_areas))`` tiles.

Unit ``i`` of the sheet is hidden dimension ``i - offset(area)`` of its area; areas appear in the
order given. An optional seeded permutation shuffles positions among the units of each area.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from topocli.errors import TopoInputError

LAYOUTS = ("stacked", "tiled")
SHEET_FORMAT = 1


@dataclass(frozen=True)
class Area:
    """One recorded module (a block's output) and the box it occupies on the sheet grid."""

    name: str
    n_units: int
    stream: str = "main"
    row0: int = 0
    col0: int = 0
    rows: int = 0
    cols: int = 0


@dataclass(frozen=True)
class AreaSpec:
    """What the model says about an area before it is placed: name, size, stream."""

    name: str
    n_units: int
    stream: str = "main"


@dataclass
class Sheet:
    """Unit index -> area, grid cell (row, col) and position (x_mm, y_mm).

    Attributes
    ----------
    layout : {"stacked", "tiled"}
    mm_per_unit : float
        Grid spacing; ``x_mm = col * mm_per_unit``, ``y_mm = row * mm_per_unit``.
    grid_shape : (int, int)
        Rows and columns of the whole sheet grid.
    areas : list of Area
    area, row, col : ndarray of shape (n_units,)
        Area index and grid cell of every unit.
    permutation_seed : int or None
        Seed of the within-area shuffle of positions, if any.
    stages : list of list of str
        Streams placed side by side, stage by stage (stacked layout only).
    """

    layout: str
    mm_per_unit: float
    grid_shape: tuple[int, int]
    areas: list[Area]
    area: np.ndarray
    row: np.ndarray
    col: np.ndarray
    permutation_seed: int | None = None
    stages: list[list[str]] = field(default_factory=list)

    # ------------------------------------------------------------------ construction
    @classmethod
    def build(
        cls,
        specs: Sequence[AreaSpec],
        layout: str = "stacked",
        mm_per_unit: float = 1.0,
        width: int | None = None,
        stages: Sequence[Sequence[str]] | None = None,
        permutation_seed: int | None = None,
    ) -> Sheet:
        """Place areas on a sheet following the module docstring's rules."""
        if layout not in LAYOUTS:
            raise TopoInputError(f"unknown sheet layout {layout!r}; choose one of {LAYOUTS}")
        if not mm_per_unit > 0:
            raise TopoInputError(f"mm per unit must be > 0, got {mm_per_unit}")
        if not specs:
            raise TopoInputError("a sheet needs at least one area")
        for spec in specs:
            if spec.n_units < 1:
                raise TopoInputError(f"area {spec.name!r} has no units")
        if layout == "stacked":
            areas, shape, stage_list = _place_stacked(specs, width, stages)
        else:
            areas, shape, stage_list = _place_tiled(specs), None, []
            shape = (
                max(a.row0 + a.rows for a in areas),
                max(a.col0 + a.cols for a in areas),
            )
        area_idx, rows, cols = [], [], []
        for k, a in enumerate(areas):
            width_a = a.cols
            local = np.arange(a.n_units)
            area_idx.append(np.full(a.n_units, k, dtype=np.int32))
            rows.append((a.row0 + local // width_a).astype(np.int32))
            cols.append((a.col0 + local % width_a).astype(np.int32))
        row = np.concatenate(rows)
        col = np.concatenate(cols)
        area_arr = np.concatenate(area_idx)
        if permutation_seed is not None:
            rng = np.random.default_rng(permutation_seed)
            for k in range(len(areas)):
                sel = np.flatnonzero(area_arr == k)
                perm = rng.permutation(sel.size)
                row[sel], col[sel] = row[sel][perm], col[sel][perm]
        return cls(
            layout=layout,
            mm_per_unit=float(mm_per_unit),
            grid_shape=(int(shape[0]), int(shape[1])),
            areas=list(areas),
            area=area_arr,
            row=row,
            col=col,
            permutation_seed=permutation_seed,
            stages=[list(s) for s in stage_list],
        )

    # ------------------------------------------------------------------ views
    @property
    def n_units(self) -> int:
        return int(self.area.size)

    @property
    def area_names(self) -> list[str]:
        return [a.name for a in self.areas]

    @property
    def area_offsets(self) -> np.ndarray:
        """Start index of every area in the unit vector, plus the total at the end."""
        return np.concatenate([[0], np.cumsum([a.n_units for a in self.areas])]).astype(np.int64)

    def area_slice(self, k: int | str) -> slice:
        """The unit-index slice of area ``k`` (index or name)."""
        k = self.area_index(k)
        off = self.area_offsets
        return slice(int(off[k]), int(off[k + 1]))

    def area_index(self, k: int | str) -> int:
        if isinstance(k, str):
            names = self.area_names
            if k not in names:
                raise TopoInputError(f"unknown area {k!r}; the sheet has {', '.join(names)}")
            return names.index(k)
        if not 0 <= k < len(self.areas):
            raise TopoInputError(f"area index {k} out of range (0..{len(self.areas) - 1})")
        return int(k)

    @property
    def x_mm(self) -> np.ndarray:
        return self.col.astype(np.float64) * self.mm_per_unit

    @property
    def y_mm(self) -> np.ndarray:
        return self.row.astype(np.float64) * self.mm_per_unit

    @property
    def positions_mm(self) -> np.ndarray:
        """(n_units, 2) array of (x_mm, y_mm)."""
        return np.stack([self.x_mm, self.y_mm], axis=1)

    @property
    def flat_index(self) -> np.ndarray:
        """Index of every unit's cell in the flattened (row-major) grid."""
        return self.row.astype(np.int64) * self.grid_shape[1] + self.col

    @property
    def unit_grid(self) -> np.ndarray:
        """Grid of unit indices, -1 where no unit sits."""
        grid = np.full(self.grid_shape, -1, dtype=np.int64)
        grid[self.row, self.col] = np.arange(self.n_units)
        return grid

    @property
    def area_grid(self) -> np.ndarray:
        """Grid of area indices, -1 where no unit sits."""
        grid = np.full(self.grid_shape, -1, dtype=np.int32)
        grid[self.row, self.col] = self.area
        return grid

    def to_grid(self, values: np.ndarray, fill: float = np.nan) -> np.ndarray:
        """Scatter ``values[..., n_units]`` onto ``[..., rows, cols]``; ``fill`` where no unit."""
        values = np.asarray(values)
        if values.shape[-1] != self.n_units:
            raise ValueError(f"expected {self.n_units} units in the last axis, got {values.shape}")
        dtype = np.result_type(values.dtype, np.float32) if np.isnan(fill) else values.dtype
        out = np.full(values.shape[:-1] + self.grid_shape, fill, dtype=dtype)
        out[..., self.row, self.col] = values
        return out

    def from_grid(self, grid: np.ndarray) -> np.ndarray:
        """Gather ``[..., rows, cols]`` back to ``[..., n_units]``."""
        return np.asarray(grid)[..., self.row, self.col]

    # ------------------------------------------------------------------ checks
    def validate(self, expected: Sequence[AreaSpec], source: str | Path | None = None) -> None:
        """Fail with one line when the sheet does not fit the model's recorded areas."""
        got = [(a.name, a.n_units) for a in self.areas]
        want = [(s.name, s.n_units) for s in expected]
        if got == want:
            return
        if len(got) != len(want):
            msg = f"sheet has {len(got)} areas but the model records {len(want)}"
        else:
            bad = next(i for i, (g, w) in enumerate(zip(got, want)) if g != w)
            msg = (
                f"sheet area {bad} is {got[bad][0]!r} with {got[bad][1]} units but the model "
                f"records {want[bad][0]!r} with {want[bad][1]} units"
            )
        raise TopoInputError(msg + "; the sheet does not fit this model", source)

    def describe(self) -> dict:
        """A JSON-able summary (also stored in topo.json)."""
        return {
            "format": SHEET_FORMAT,
            "layout": self.layout,
            "mm_per_unit": self.mm_per_unit,
            "grid_shape": list(self.grid_shape),
            "n_units": self.n_units,
            "permutation_seed": self.permutation_seed,
            "stages": self.stages,
            "areas": [asdict(a) for a in self.areas],
        }

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> None:
        """Write ``sheet.safetensors``: unit arrays plus the summary as metadata."""
        from safetensors.numpy import save_file

        tensors = {
            "area": self.area.astype(np.int32),
            "row": self.row.astype(np.int32),
            "col": self.col.astype(np.int32),
        }
        save_file(tensors, str(path), metadata={"sheet": json.dumps(self.describe())})

    @classmethod
    def load(cls, path: str | Path) -> Sheet:
        from safetensors import SafetensorError, safe_open

        path = Path(path)
        if not path.is_file():
            raise TopoInputError("sheet file not found", path)
        try:
            with safe_open(str(path), framework="numpy") as f:
                meta = json.loads((f.metadata() or {})["sheet"])
                arrays = {k: f.get_tensor(k) for k in ("area", "row", "col")}
        except (KeyError, ValueError, OSError, SafetensorError) as exc:
            raise TopoInputError(f"not a topo sheet file ({exc})", path) from exc
        if meta.get("format") != SHEET_FORMAT:
            raise TopoInputError(f"unsupported sheet format {meta.get('format')}", path)
        sheet = cls(
            layout=meta["layout"],
            mm_per_unit=float(meta["mm_per_unit"]),
            grid_shape=tuple(meta["grid_shape"]),
            areas=[Area(**a) for a in meta["areas"]],
            area=arrays["area"],
            row=arrays["row"],
            col=arrays["col"],
            permutation_seed=meta.get("permutation_seed"),
            stages=meta.get("stages", []),
        )
        if sheet.n_units != meta["n_units"] or sheet.n_units != sum(a.n_units for a in sheet.areas):
            raise TopoInputError("sheet unit count disagrees with its area table", path)
        sheet.check_consistent(path)
        return sheet

    def check_consistent(self, source: str | Path | None = None) -> None:
        """One-line TopoInputError unless the sheet is one :meth:`build` could have made.

        Checks what a damaged or hand-edited sheet file could break: a finite spacing, the grid
        equal to the bounding box of the areas, each area's box tight around its units, every
        unit inside its own area's box, no two units in one cell, and a grid no larger than a
        few cells per unit (so a bad file cannot make later steps allocate without bound).
        """

        def bad(msg: str) -> TopoInputError:
            return TopoInputError(f"inconsistent sheet: {msg}", source)

        if self.layout not in LAYOUTS:
            raise bad(f"unknown layout {self.layout!r}")
        if not (math.isfinite(self.mm_per_unit) and self.mm_per_unit > 0):
            raise bad(f"mm per unit must be a finite number > 0, got {self.mm_per_unit}")
        n = self.n_units
        if not (self.area.shape == self.row.shape == self.col.shape == (n,)):
            raise bad("area, row and col arrays differ in length")
        if not self.areas or n == 0:
            raise bad("no area or no unit")
        if self.area.min() < 0 or self.area.max() >= len(self.areas):
            raise bad("a unit names an area the sheet does not have")
        counts = np.bincount(self.area, minlength=len(self.areas))
        for k, a in enumerate(self.areas):
            if counts[k] != a.n_units:
                raise bad(f"area {a.name!r} lists {a.n_units} units, the arrays hold {counts[k]}")
            if min(a.rows, a.cols, a.row0, a.col0) < 0 or a.rows < 1 or a.cols < 1:
                raise bad(f"area {a.name!r} has a negative or empty box")
            if not (a.rows - 1) * a.cols < a.n_units <= a.rows * a.cols:
                raise bad(f"area {a.name!r}: its {a.rows} x {a.cols} box does not fit its units")
        box = (max(a.row0 + a.rows for a in self.areas), max(a.col0 + a.cols for a in self.areas))
        if tuple(self.grid_shape) != box:
            raise bad(f"grid {tuple(self.grid_shape)} is not the areas' bounding box {box}")
        if box[0] * box[1] > 16 * n + 65536:
            raise bad(f"grid of {box[0]} x {box[1]} cells for {n} units")
        a = [self.areas[k] for k in range(len(self.areas))]
        row0 = np.array([x.row0 for x in a])[self.area]
        col0 = np.array([x.col0 for x in a])[self.area]
        rows = np.array([x.rows for x in a])[self.area]
        cols = np.array([x.cols for x in a])[self.area]
        inside = (self.row >= row0) & (self.row < row0 + rows)
        inside &= (self.col >= col0) & (self.col < col0 + cols)
        if not inside.all():
            u = int(np.flatnonzero(~inside)[0])
            raise bad(f"unit {u} at (row {self.row[u]}, col {self.col[u]}) is outside its area")
        cells = self.row.astype(np.int64) * box[1] + self.col.astype(np.int64)
        if np.unique(cells).size != n:
            raise bad("two units share one grid cell")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sheet):
            return NotImplemented
        return (
            self.describe() == other.describe()
            and np.array_equal(self.area, other.area)
            and np.array_equal(self.row, other.row)
            and np.array_equal(self.col, other.col)
        )


def _pow2_at_least(x: float) -> int:
    return 1 << max(0, math.ceil(math.log2(max(x, 1.0))))


def _place_stacked(
    specs: Sequence[AreaSpec], width: int | None, stages: Sequence[Sequence[str]] | None
) -> tuple[list[Area], tuple[int, int], list[list[str]]]:
    streams: dict[str, list[AreaSpec]] = {}
    for s in specs:
        streams.setdefault(s.stream, []).append(s)
    if stages is None:
        stages = [[name] for name in streams]
    stage_list = [list(st) for st in stages]
    named = [s for st in stage_list for s in st]
    if sorted(named) != sorted(streams) or len(named) != len(set(named)):
        raise TopoInputError(
            f"stages {stage_list} must name every stream exactly once: {list(streams)}"
        )
    if width is None:
        per_stream = max(
            _pow2_at_least(math.sqrt(max(a.n_units for a in streams[s]))) for s in streams
        )
        width = per_stream * max(len(st) for st in stage_list)
    if width < 1:
        raise TopoInputError(f"sheet width must be >= 1, got {width}")
    for st in stage_list:
        if width % len(st):
            raise TopoInputError(
                f"sheet width {width} does not divide among the {len(st)} streams {st}"
            )
    placed: dict[str, Area] = {}
    row_top = 0
    for st in stage_list:
        stream_w = width // len(st)
        stage_height = 0
        for j, stream in enumerate(st):
            r = row_top
            for spec in streams[stream]:
                rows = math.ceil(spec.n_units / stream_w)
                placed[spec.name] = Area(
                    spec.name, spec.n_units, stream, r, j * stream_w, rows, stream_w
                )
                r += rows
            stage_height = max(stage_height, r - row_top)
        row_top += stage_height
    return [placed[s.name] for s in specs], (row_top, width), stage_list


def tile_shape(n: int) -> tuple[int, int]:
    """Rows x cols of one tiled area (see the module docstring)."""
    r = int(math.isqrt(n))
    while n % r:
        r -= 1
    if n // r <= 4 * r:
        return r, n // r
    cols = math.ceil(math.sqrt(n))
    return math.ceil(n / cols), cols


def _place_tiled(specs: Sequence[AreaSpec]) -> list[Area]:
    shapes = [tile_shape(s.n_units) for s in specs]
    per_row = math.ceil(math.sqrt(len(specs)))
    cell_h = max(r for r, _ in shapes) + 1
    cell_w = max(c for _, c in shapes) + 1
    areas = []
    for k, (spec, (rows, cols)) in enumerate(zip(specs, shapes)):
        areas.append(
            Area(
                spec.name,
                spec.n_units,
                spec.stream,
                (k // per_row) * cell_h,
                (k % per_row) * cell_w,
                rows,
                cols,
            )
        )
    return areas
