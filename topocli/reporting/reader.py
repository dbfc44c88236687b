"""One reader for any topo results folder: manifest, model identity, sheet, maps and tables.

Every command that takes an earlier results folder (``smooth``, ``intervene --from``,
``compare --model-results``, ``screen --known``) reads it through :func:`read_results`, so a
folder of any command is read, checked and refused the same way. Tables come back with the same
column names whichever command wrote them: a screen's ``category`` column is read as
``contrast`` (a screen category is a contrast: the category against its rest), and only its
primary maps (category vs rest, not vs the baseline) are kept.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import pandas as pd

from topocli.errors import TopoInputError
from topocli.reporting.results import (
    MANIFEST,
    MANIFEST_FORMAT,
    nifti_stem,
    sha256_file,
    to_jsonable,
)

# what identifies a model across folders: its weights, how it is recorded, its sheet, its adaptors
IDENTITY_KEYS = ("weights_sha256", "mode", "areas", "sheet", "adaptor_sha256", "random_init")
NIFTI_SUFFIXES = (".nii", ".nii.gz")
# names older screen folders used for the maps every command now writes as tmap/qmap.nii.gz
LEGACY_MAP_NAMES = {"tmap.nii.gz": "tmaps.nii.gz", "qmap.nii.gz": "qmaps.nii.gz"}


def is_nifti(name: str) -> bool:
    """Whether a file name is a NIfTI image (``.nii`` or ``.nii.gz``)."""
    return name.endswith(NIFTI_SUFFIXES)


def identity_differences(
    expected: Mapping[str, Any] | None, actual: Mapping[str, Any] | None
) -> list[str]:
    """Which of :data:`IDENTITY_KEYS` differ between two model identities."""

    def norm(value: Any) -> str:
        return json.dumps(to_jsonable(value), sort_keys=True)

    a, b = dict(expected or {}), dict(actual or {})
    return [k for k in IDENTITY_KEYS if norm(a.get(k)) != norm(b.get(k))]


def describe_identity(identity: Mapping[str, Any] | None) -> str:
    """A model's short name: its shipped name, checkpoint or base model."""
    ident = identity or {}
    return str(ident.get("name") or ident.get("checkpoint") or ident.get("base_model"))


@dataclass
class Results:
    """A topo results folder read back (see :func:`read_results`).

    Attributes
    ----------
    root : Path
    manifest : dict
        The checked ``manifest.json``.
    """

    root: Path
    manifest: dict

    # ------------------------------------------------------------------ manifest
    @property
    def command(self) -> str:
        """The command that wrote the folder (``localize``, ``screen``, ...)."""
        return str(self.manifest.get("command"))

    @property
    def parameters(self) -> dict:
        return dict(self.manifest.get("parameters") or {})

    @property
    def extra(self) -> dict:
        return dict(self.manifest.get("extra") or {})

    @property
    def identity(self) -> dict | None:
        """The model identity recorded in the manifest (None when not recorded)."""
        ident = self.extra.get("model")
        return dict(ident) if ident else None

    @property
    def conditions(self) -> list[str]:
        extra = self.extra
        return [str(c) for c in (extra.get("conditions") or extra.get("categories") or [])]

    @property
    def contrasts(self) -> dict[str, dict[str, float]]:
        """Contrast name -> condition weights (manifest ``extra`` or ``parameters``)."""
        raw = self.extra.get("contrasts") or self.parameters.get("contrasts") or {}
        return {
            str(name): {str(c): float(w) for c, w in dict(weights).items()}
            for name, weights in dict(raw).items()
            if isinstance(weights, Mapping)
        }

    def find_contrast(self, expr: str, available: Sequence[str]) -> str:
        """The name under which ``available`` holds the contrast ``expr``.

        ``expr`` may be the name itself or any spelling of the same contrast (``a>b``,
        ``a - b``, ``2*a - 2*b``): it is matched by its weights against the manifest's
        contrasts, so ``--contrast "sentences>nonwords"`` finds ``sentences-nonwords``.
        """
        from topocli.stats.contrasts import match_contrast

        if expr in available:
            return expr
        named = {k: w for k, w in self.contrasts.items() if k in available}
        try:
            name, _ = match_contrast(expr, named, self.conditions)
        except TopoInputError:
            name = None
        if name not in available:
            raise TopoInputError(
                f"no contrast {expr!r} in this folder; it has {', '.join(available)}", self.root
            )
        return name

    @property
    def localizer(self) -> str | None:
        name = self.extra.get("localizer") or self.parameters.get("localizer")
        return None if name is None else str(name)

    def output_names(self) -> list[str]:
        """Files listed in the manifest, in its order."""
        return [str(row["path"]) for row in self.manifest.get("outputs", [])]

    def nifti_outputs(self) -> list[str]:
        """The sheet maps (NIfTI files) listed in the manifest."""
        return [n for n in self.output_names() if is_nifti(n)]

    def require_command(self, commands: Sequence[str], purpose: str) -> None:
        """One-line error unless the folder was written by one of ``commands``."""
        if self.command not in commands:
            raise TopoInputError(
                f"is a `topo {self.command}` folder; {purpose} needs a "
                f"{' or '.join(commands)} results folder",
                self.root,
            )

    def require_same_model(self, identity: Mapping[str, Any], remedy: str) -> None:
        """One-line error unless the folder's model identity equals ``identity``."""
        theirs = self.identity
        if not theirs:
            raise TopoInputError(
                "its manifest.json records no model, so it cannot be checked against this one",
                self.root,
            )
        diff = identity_differences(theirs, identity)
        if diff:
            raise TopoInputError(
                f"made with another model ({describe_identity(theirs)}; {', '.join(diff)} "
                f"differ); {remedy}",
                self.root,
            )

    # ------------------------------------------------------------------ files
    def verify(self, names: Sequence[str]) -> None:
        """Each named file is byte for byte what the command wrote (sha256 in the manifest)."""
        verify_outputs(self.root, self.manifest, [str(PurePosixPath(n)) for n in names])

    def path(self, name: str) -> Path:
        return self.root / name

    def has(self, name: str) -> bool:
        return (self.root / name).is_file()

    def table(
        self, name: str, required: Sequence[str] = (), what: str | None = None
    ) -> pd.DataFrame:
        """A CSV table of the folder; one-line errors for an unreadable file or missing columns.

        Parameters
        ----------
        name : str
            File name inside the folder.
        required : sequence of str
            Columns that must be present (after stripping white space from the header).
        what : str, optional
            How the message names the table (default: the file name).
        """
        path = self.root / name
        what = what or name
        if not path.is_file():
            raise TopoInputError(f"has no {name}", self.root)
        self.verify([name])
        table = _read_csv(path, what)
        table.columns = [str(c).strip() for c in table.columns]
        missing = [c for c in required if c not in table.columns]
        if missing:
            raise TopoInputError(f"{what} is missing columns: {', '.join(missing)}", path)
        return table

    def unit_maps(self, required: Sequence[str] = ("unit",)) -> pd.DataFrame:
        """``units.csv`` with a ``contrast`` column (a screen's ``category``), primary maps only.

        A screen folder's rows against the baseline alone (``reference == "baseline"``) are
        dropped: the category-vs-rest map is the one other commands use.
        """
        path = self.root / "units.csv"
        if not path.is_file():
            raise TopoInputError(
                f"has no units.csv; is it a topo localize or screen folder (it is "
                f"`topo {self.command}`)?",
                self.root,
            )
        col = _contrast_column(_read_csv(path, "units.csv", nrows=0).columns)
        if col is None:
            raise TopoInputError("units.csv has no 'contrast' (or 'category') column", path)
        units = self.table("units.csv", [col, *required], "units.csv")
        units = units.rename(columns={col: "contrast"})
        units["contrast"] = units["contrast"].astype(str)
        if "reference" in units.columns:
            units = units[units["reference"].astype(str) != "baseline"].reset_index(drop=True)
        return units

    def cluster_table(self, required: Sequence[str] = ("cluster",)) -> pd.DataFrame | None:
        """``clusters.csv`` with a ``contrast`` column (None when the folder has none)."""
        if not self.has("clusters.csv"):
            return None
        col = _contrast_column(_read_csv(self.root / "clusters.csv", "cluster table", 0).columns)
        clusters = self.table("clusters.csv", required, "cluster table")
        if col is None:
            clusters["contrast"] = ""
        else:
            clusters = clusters.rename(columns={col: "contrast"})
        clusters["contrast"] = clusters["contrast"].astype(str)
        return clusters

    def sheet(self) -> Any:
        """The folder's ``sheet.safetensors`` as a :class:`~topocli.sheet.Sheet`, or None."""
        from topocli.sheet import Sheet

        path = self.root / "sheet.safetensors"
        if not path.is_file():
            return None
        self.verify(["sheet.safetensors"])
        return Sheet.load(path)

    def t_map(self, contrast: str, n_units: int) -> np.ndarray:
        """A contrast's t per sheet unit from ``units.csv`` (NaN where a unit is missing)."""
        units = self.unit_maps(("unit", "t"))
        rows = units[units["contrast"] == contrast]
        t = np.full(n_units, np.nan)
        unit = rows["unit"].to_numpy(dtype=np.int64)
        if unit.size and (unit.min() < 0 or unit.max() >= n_units):
            raise TopoInputError(
                f"units.csv names units up to {unit.max()}, but the sheet has {n_units}",
                self.root,
            )
        t[unit] = rows["t"].to_numpy(dtype=np.float64)
        return t


def _read_csv(path: Path, what: str, nrows: int | None = None) -> pd.DataFrame:
    """``pandas.read_csv`` with one-line errors naming the file."""
    try:
        return pd.read_csv(path, nrows=nrows)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else "empty"
        raise TopoInputError(f"cannot read {what} as CSV ({first})", path) from None
    except OSError as error:
        raise TopoInputError(f"cannot read {what} ({error.strerror})", path) from None


# what makes two folders' maps comparable, besides the model
ANALYSIS_KEYS = ("fwhm_mm", "across_areas", "pooling", "q", "fdr_scope", "alternative")


def analysis_differences(
    a: Mapping[str, Any], b: Mapping[str, Any], keys: Sequence[str] = ANALYSIS_KEYS
) -> list[str]:
    """``key a vs b`` for each analysis setting two parameter sets record differently.

    A setting one side does not record is not a difference (older folders, other commands).
    """
    out = []
    for key in keys:
        if key in a and key in b and to_jsonable(a[key]) != to_jsonable(b[key]):
            out.append(f"{key} {a[key]!r} vs {b[key]!r}")
    return out


def warn_if_incomparable(what: str, differences: Sequence[str]) -> None:
    """A one-line TopoWarning naming the settings in which combined folders differ."""
    if differences:
        from topocli.errors import warn

        warn(
            f"{what} were made with different settings ({'; '.join(differences)}): their maps "
            "are not comparable unit for unit; rerun them with the same options"
        )


def _contrast_column(columns: Sequence[str]) -> str | None:
    names = [str(c).strip() for c in columns]
    return "contrast" if "contrast" in names else "category" if "category" in names else None


def read_results(path: str | Path, verify: bool = False) -> Results:
    """Read and check any topo results folder.

    Parameters
    ----------
    path : str or Path
        The folder.
    verify : bool
        Also re-hash every output against the manifest.

    Raises
    ------
    TopoInputError
        Not a folder, no or foreign ``manifest.json``, outputs missing (or changed, ``verify``).
    """
    root = Path(path)
    return Results(root, read_manifest(root, verify=verify))


def results_root(path: Path, depth: int = 8) -> Path:
    """The results folder holding file ``path``: the nearest ancestor with a manifest.json."""
    for folder in list(Path(path).parents)[:depth]:
        if (folder / MANIFEST).is_file():
            return folder
    raise TopoInputError("not inside a topo results folder (no manifest.json)", Path(path).parent)


def read_manifest(results_dir: str | Path, verify: bool = False) -> dict[str, Any]:
    """Load and check ``manifest.json`` of an earlier results folder.

    Parameters
    ----------
    results_dir : str or Path
    verify : bool
        Also re-hash every output and fail if any file changed since it was written.

    Raises
    ------
    TopoInputError
        Not a folder, no or unreadable manifest, missing outputs, or (``verify``) changed files.
    """
    root = Path(results_dir)
    if not root.is_dir():
        raise TopoInputError("results folder not found", root)
    mpath = root / MANIFEST
    if not mpath.is_file():
        raise TopoInputError("not a topo results folder (no manifest.json)", root)
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TopoInputError(f"manifest.json is not valid JSON ({exc})", mpath) from exc
    if not isinstance(manifest, dict) or manifest.get("tool") != "topo":
        raise TopoInputError("manifest.json was not written by topo", mpath)
    if manifest.get("format") != MANIFEST_FORMAT:
        raise TopoInputError(f"unsupported manifest format {manifest.get('format')!r}", mpath)
    for key in ("command", "outputs"):
        if key not in manifest:
            raise TopoInputError(f"manifest.json has no {key!r}", mpath)
    for row in manifest["outputs"]:
        f = root / row["path"]
        if not f.is_file():
            raise TopoInputError("listed in manifest.json but missing", f)
    if verify:
        verify_outputs(root, manifest)
    return manifest


def verify_outputs(root: Path, manifest: Mapping[str, Any], names: Sequence[str] | None = None):
    """Re-hash outputs (all, or ``names``) against the manifest; one line for a changed file.

    Raises
    ------
    TopoInputError
        A file's sha256 differs from the one the manifest recorded, or ``names`` holds a file the
        manifest does not list.
    """
    recorded = {str(r["path"]): r.get("sha256") for r in manifest.get("outputs", [])}
    for name in recorded if names is None else names:
        f = Path(root) / name
        if name not in recorded:
            raise TopoInputError("is not listed in the folder's manifest.json", f)
        if sha256_file(f) != recorded[name]:
            raise TopoInputError(
                "changed since manifest.json was written (its sha256 differs); refusing to use it",
                f,
            )


def sheet_map_file(folder: str | Path, name: str = "tmap.nii.gz") -> Path | None:
    """A results folder's map file by its current name, or the name older folders used.

    ``tmap.nii.gz`` is found as ``tmaps.nii.gz`` in screen folders written before the names
    were unified (likewise ``qmap``). None when neither exists.
    """
    root = Path(folder)
    for candidate in (name, LEGACY_MAP_NAMES.get(name)):
        if candidate and (root / candidate).is_file():
            return root / candidate
    return None


def load_sheet_maps(path: str | Path) -> tuple[np.ndarray, list[str], Any]:
    """Read a sheet-map NIfTI written by :meth:`ResultsFolder.write_sheet_nifti`.

    A 3-D image ``(cols, rows, 1)`` holds one map, a 4-D one ``(cols, rows, 1, n_maps)``
    several; older folders stored a single map as 4-D, which reads the same. Voxel indices, not
    the affine, place the values (the affine's y flip of newer folders changes nothing here).

    Returns
    -------
    values : ndarray, shape (n_maps, n_units), float64
    names : list of str
    sheet : Sheet
    """
    import nibabel as nib

    from topocli.sheet import Sheet

    p = Path(path)
    if p.is_dir():
        raise TopoInputError("expected a sheet map file (.nii or .nii.gz), got a folder", p)
    if not p.is_file():
        raise TopoInputError("sheet map file not found", p)
    root = results_root(p)
    manifest = read_manifest(root)
    sidecar_path = p.with_name(PurePosixPath(nifti_stem(p.name)).name + ".json")
    if not sidecar_path.is_file():
        raise TopoInputError("no sidecar JSON next to the map; not a topo sheet map", p)
    try:
        sidecar = json.loads(sidecar_path.read_text(encoding="utf-8"))
        sheet_file = sidecar["sheet_file"]
        names = [str(n) for n in sidecar["maps"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise TopoInputError(f"unreadable sheet map sidecar ({exc})", sidecar_path) from exc
    files = [p, sidecar_path, p.parent / sheet_file]
    rels = [f.resolve().relative_to(root.resolve()).as_posix() for f in files]
    verify_outputs(root, manifest, rels)
    sheet = Sheet.load(p.parent / sheet_file)
    try:
        img = nib.load(str(p))
        data = np.asarray(img.dataobj, dtype=np.float64)
    except Exception as exc:  # nibabel raises many types for corrupt files
        raise TopoInputError(f"not a readable NIfTI image ({exc})", p) from exc
    rows, cols = sheet.grid_shape
    if data.ndim == 3:
        data = data[..., None]
    if data.ndim != 4 or data.shape[:3] != (cols, rows, 1) or data.shape[3] != len(names):
        raise TopoInputError(
            f"image shape {data.shape} does not fit the sheet ({cols} cols x {rows} rows, "
            f"{len(names)} maps)",
            p,
        )
    grids = np.transpose(data[:, :, 0, :], (2, 1, 0))  # (M, R, C)
    return sheet.from_grid(grids), names, sheet


def load_sheet_map(path: str | Path, name: str | None = None) -> tuple[np.ndarray, Any]:
    """Read one sheet map: ``(values_units, sheet)``.

    For a 4-D file pass ``name`` to pick a map; without it the file must hold exactly one.
    """
    values, names, sheet = load_sheet_maps(path)
    if name is None:
        if len(names) != 1:
            raise TopoInputError(
                f"file holds {len(names)} maps ({', '.join(names)}); pick one", path
            )
        return values[0], sheet
    if name not in names:
        raise TopoInputError(f"no map {name!r}; the file has {', '.join(names)}", path)
    return values[names.index(name)], sheet


def iter_output_paths(manifest: Mapping[str, Any]) -> Iterable[str]:
    """Relative paths of the outputs a manifest lists."""
    return (row["path"] for row in manifest.get("outputs", []))
