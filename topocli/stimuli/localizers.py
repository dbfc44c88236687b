"""The localizer library: declarative definitions, shipped stimuli and stimulus generators.

A localizer is one TOML file (schema in ``localizers/README.md``): its conditions, weighted
contrasts, default thresholds, target region and literature source, and where its stimuli come
from: a folder shipped with the project, the user (``stimuli = "user"``), or a generator of this
module (``stimuli = "generated"``: Gaussian-windowed noise patches for retinotopy, pure tones for
tonotopy). Shipped definitions live in the repository's ``localizers/`` folder, installed as the
data package ``topocli.localizer_data``.
"""

from __future__ import annotations

import math
import os
import re
import tempfile
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from topocli.errors import TopoInputError
from topocli.stimuli.generators import generate_retinotopy, generate_tonotopy, tone_name
from topocli.stimuli.library import library_root
from topocli.stimuli.stimulus_set import StimulusSet, load_condition_folders

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same API from the tomli backport
    import tomli as tomllib

__all__ = [
    "Contrast",
    "Localizer",
    "Thresholds",
    "baseline_pool",
    "generate_retinotopy",
    "generate_tonotopy",
    "library_root",
    "list_localizers",
    "load_localizer",
    "shipped_category_sets",
]

SCHEMA_VERSION = 1
# Where an installed copy keeps the shipped files (the second name is in case the data package is
# renamed so that it no longer shadows this module in a non-editable install).
MODALITIES = ("text", "image", "audio")
ALTERNATIVES = ("greater", "less", "two-sided")
ANALYSES = ("contrast", "parametric")
GENERATORS = ("retinotopy", "tonotopy")
BUILD_PREFIX = "build:"
STIMULUS_SUFFIXES = {
    "text": (".txt",),
    "image": (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"),
    "audio": (".wav", ".flac", ".ogg", ".mp3"),
}

_TOP_KEYS = {
    "schema_version",
    "name",
    "description",
    "modality",
    "stimuli",
    "conditions",
    "folders",
    "analysis",
    "contrasts",
    "default_contrast",
    "thresholds",
    "target_region",
    "parcel_category",
    "source",
    "parametric",
    "generator",
}
_REQUIRED_KEYS = ("name", "description", "modality", "stimuli", "conditions", "source")
_CONTRAST_KEYS = {"expression", "target_region", "parcel_category", "parcels"}
_THRESHOLD_KEYS = {"q", "top_percent", "fwhm_mm", "alternative", "min_cluster"}
_PARAMETRIC_KEYS = {"unit", "values"}
_GENERATOR_KEYS = {
    "retinotopy": {"kind", "positions", "n_per_position", "size_px", "seed", "sigma_fraction"},
    "tonotopy": {"kind", "frequencies_hz", "n_per_frequency", "duration_s", "sample_rate", "seed"},
}
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_IDENT_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_TOKEN_RE = re.compile(
    r"\s*(?:(?P<num>(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)|(?P<name>[A-Za-z_][A-Za-z0-9_]*)"
    r"|(?P<op>[-+*>]))"
)


@dataclass(frozen=True)
class Thresholds:
    """Default thresholds of a localizer; every command option overrides them.

    Attributes
    ----------
    q : float
        Benjamini-Hochberg FDR level, in (0, 1).
    top_percent : float
        fROI size: top x% of units of the contrast inside a region, in (0, 100].
    fwhm_mm : float
        Gaussian smoothing FWHM in mm on the sheet (0 = no smoothing).
    alternative : str
        ``"greater"`` (ON > OFF), ``"less"`` or ``"two-sided"``.
    min_cluster : int
        Smallest cluster (units) kept and used for island Moran's I.
    """

    q: float = 0.05
    top_percent: float = 10.0
    fwhm_mm: float = 0.0
    alternative: str = "greater"
    min_cluster: int = 8


@dataclass(frozen=True)
class Contrast:
    """A named weighted contrast over a localizer's conditions.

    Attributes
    ----------
    name : str
        Key in the definition's ``[contrasts]`` table (or the expression for ad-hoc contrasts).
    expression : str
        The expression as written, e.g. ``"math - 0.5*false_belief - 0.5*false_photo"``.
    weights : dict of str to float
        Condition -> weight; weights sum to zero.
    target_region, parcel_category : str or None
        Where the contrast is expected to land (falls back to the localizer's own).
    parcels : tuple of str
        Parcel names inside ``parcel_category`` (e.g. ``("ffa", "ofa", "sts")``).
    """

    name: str
    expression: str
    weights: dict[str, float]
    target_region: str | None = None
    parcel_category: str | None = None
    parcels: tuple[str, ...] = ()


@dataclass(frozen=True)
class Localizer:
    """A validated localizer definition (see ``localizers/README.md`` for the file schema).

    Attributes
    ----------
    name, description : str
        Identifier and one-paragraph description.
    modality : str
        ``"text"``, ``"image"`` or ``"audio"``.
    stimuli : str
        ``"user"``, ``"generated"`` or a folder path as written in the file.
    conditions : tuple of str
        Condition names (identifiers), in file order.
    contrasts : dict of str to Contrast
        Named contrasts.
    default_contrast : str or None
        Name of the contrast a command uses when none is given.
    thresholds : Thresholds
        Default thresholds.
    target_region : str
        Where the localizer's default contrast is expected to land.
    parcel_category : str or None
        EMFL parcel category of the target region (language, tom, md, julian, speech, vwfa).
    source : tuple of str
        Literature the localizer follows (authors and year).
    analysis : str
        ``"contrast"`` or ``"parametric"`` (ANOVA across conditions, preferred value per unit).
    values : dict of str to tuple of float
        Parametric value of each condition (one number, or (x, y) for positions).
    value_unit : str or None
        Unit of the parametric values.
    generator : dict or None
        Generator parameters when ``stimuli == "generated"``.
    path : Path or None
        The definition file.
    folders : dict of str to Path
        Per-condition folder overrides, resolved against the definition's folder.
    """

    name: str
    description: str
    modality: str
    stimuli: str
    conditions: tuple[str, ...]
    contrasts: dict[str, Contrast]
    default_contrast: str | None
    thresholds: Thresholds
    target_region: str
    parcel_category: str | None
    source: tuple[str, ...]
    analysis: str = "contrast"
    values: dict[str, tuple[float, ...]] = field(default_factory=dict)
    value_unit: str | None = None
    generator: dict | None = None
    path: Path | None = None
    folders: dict[str, Path] = field(default_factory=dict)

    @property
    def root(self) -> Path:
        """Folder that relative paths in the definition resolve against."""
        return self.path.parent if self.path is not None else Path.cwd()

    @property
    def built_set(self) -> str | None:
        """The set named by ``stimuli = "build:NAME"`` (see ``topo stimuli list``), else None."""
        if self.stimuli.startswith(BUILD_PREFIX):
            return self.stimuli[len(BUILD_PREFIX) :]
        return None

    @property
    def stimuli_dir(self) -> Path | None:
        """Resolved stimulus folder, or None for ``"user"`` / ``"generated"`` / ``"build:"``."""
        if self.stimuli in ("user", "generated") or self.built_set is not None:
            return None
        return (self.root / self.stimuli).resolve()

    def contrast(self, spec: str | None = None) -> Contrast:
        """Return a named contrast, or parse an ad-hoc expression over this localizer's conditions.

        Parameters
        ----------
        spec : str, optional
            A contrast name from the definition, or an expression such as
            ``"sentences - nonwords"`` or ``"sentences > nonwords"``. None: the default contrast.

        Returns
        -------
        Contrast
        """
        if spec is None:
            if self.default_contrast is None:
                raise TopoInputError(
                    f"localizer {self.name!r} has no default contrast; name one of: "
                    f"{', '.join(self.contrasts) or '(none defined)'}",
                    self.path,
                )
            return self.contrasts[self.default_contrast]
        if spec in self.contrasts:
            return self.contrasts[spec]
        weights = _checked_weights(spec, self.conditions, self.path, f"contrast {spec!r}")
        return Contrast(name=spec, expression=spec, weights=weights)

    def weights(self, spec: str | None = None) -> dict[str, float]:
        """Condition -> weight of a contrast (see :meth:`contrast`)."""
        return dict(self.contrast(spec).weights)

    def stimulus_folders(self, root: str | Path | None = None) -> dict[str, Path]:
        """Folder of each condition's stimuli.

        Parameters
        ----------
        root : str or Path, optional
            A user stimulus folder with one sub-folder per condition (``--stimuli DIR``). When
            omitted the shipped folders of the definition are used; a ``"build:NAME"``
            localizer builds its set on first use into the cache (``$TOPO_STIMULI_DIR``,
            default ``~/.cache/topo/stimuli``, keyed by set, seed, count and source versions)
            and reuses it afterwards.

        Returns
        -------
        dict of str to Path
            Condition -> existing folder, in condition order.

        Raises
        ------
        TopoInputError
            User or generated stimuli without ``root``, or a missing / empty condition folder.
        """
        if root is not None:
            return self._user_folders(Path(root))
        if self.stimuli == "user":
            raise TopoInputError(
                f"localizer {self.name!r} ships no stimuli ({self.modality}); pass --stimuli DIR "
                f"with one sub-folder per condition: {', '.join(self.conditions)}",
                self.path,
            )
        if self.stimuli == "generated":
            raise TopoInputError(
                f"localizer {self.name!r} uses generated stimuli; generate them with "
                "Localizer.generate(out_dir) or pass --stimuli DIR",
                self.path,
            )
        if self.built_set is not None:
            from topocli.stimuli.builders.build import cached_build

            try:
                base = cached_build(self.built_set)
            except TopoInputError as exc:
                raise TopoInputError(
                    f"localizer {self.name!r} builds its {self.modality} stimuli (set "
                    f"{self.built_set!r}) from installed packages: {exc}; or pass --stimuli DIR "
                    f"with one sub-folder per condition: {', '.join(self.conditions)}",
                    self.path,
                ) from None
            return {c: self._checked_folder(base / c, c) for c in self.conditions}
        base = self.stimuli_dir
        out = {}
        for cond in self.conditions:
            folder = self.folders.get(cond, base / cond)
            out[cond] = self._checked_folder(folder, cond)
        return out

    def generate(self, out_dir: str | Path) -> dict[str, Path]:
        """Write the generated stimuli of a ``stimuli = "generated"`` localizer into ``out_dir``.

        Returns
        -------
        dict of str to Path
            Condition -> folder of generated files.
        """
        if self.generator is None:
            raise TopoInputError(f"localizer {self.name!r} has no generator", self.path)
        gen = dict(self.generator)
        kind = gen.pop("kind")
        if kind == "retinotopy":
            positions = {k: tuple(v) for k, v in gen.pop("positions").items()}
            return generate_retinotopy(out_dir, positions, **gen)
        return generate_tonotopy(out_dir, **gen)

    def _user_folders(self, root: Path) -> dict[str, Path]:
        if not root.is_dir():
            raise TopoInputError("stimulus folder not found", root)
        present = sorted(p.name for p in root.iterdir() if p.is_dir())
        missing = [c for c in self.conditions if c not in present]
        if missing:
            raise TopoInputError(
                f"missing condition folder(s) {', '.join(missing)} for localizer {self.name!r}; "
                f"found: {', '.join(present) or '(no sub-folders)'}",
                root,
            )
        return {c: self._checked_folder(root / c, c) for c in self.conditions}

    def _checked_folder(self, folder: Path, cond: str) -> Path:
        if not folder.is_dir():
            raise TopoInputError(f"stimulus folder of condition {cond!r} not found", folder)
        suffixes = STIMULUS_SUFFIXES[self.modality]
        if not any(p.suffix.lower() in suffixes for p in folder.iterdir() if p.is_file()):
            raise TopoInputError(
                f"no {self.modality} stimuli ({', '.join(suffixes)}) for condition {cond!r}", folder
            )
        return folder


# --------------------------------------------------------------------------- library lookup


def list_localizers() -> list[str]:
    """Names of the shipped localizers, sorted."""
    return sorted(p.stem for p in library_root().glob("*.toml"))


def shipped_category_sets() -> Path:
    """Folder of the shipped text category sets (one sub-folder per category)."""
    return library_root() / "categories"


# images and sounds ship no files: their mixed baseline is a build from installed packages
BUILT_BASELINES = {"image": "categories-visual", "audio": "voice"}


def baseline_pool(modality: str = "text") -> Path:
    """Folder of the mixed baseline pool for a modality.

    Text: the shipped neutral sentences (``localizers/baseline``). Images: every category of
    the ``categories-visual`` build (people, animals, food, vehicles, plants, household, town,
    landscapes); audio: the ``voice`` build (vocal and non-vocal sounds); each built once into
    the stimuli cache (``topo stimuli build``) and pooled into one condition by the screen.

    Raises
    ------
    TopoInputError
        For a modality with no baseline, or when the build's Debian packages are missing.
    """
    if modality == "text":
        return library_root() / "baseline"
    if modality in BUILT_BASELINES:
        from topocli.stimuli.builders.build import cached_build

        return cached_build(BUILT_BASELINES[modality])
    raise TopoInputError(
        f"no baseline pool for modality {modality!r} (text, image, audio); pass --against DIR"
    )


def load_localizer(name_or_path: str | Path) -> Localizer:
    """Load and validate a localizer by shipped name or by the path of a TOML file.

    Parameters
    ----------
    name_or_path : str or Path
        A shipped name (see :func:`list_localizers`) or a path to a ``.toml`` definition; the
        relative folders of a definition resolve against the file's folder.

    Returns
    -------
    Localizer

    Raises
    ------
    TopoInputError
        Unknown name, unreadable file, or a definition that does not validate.
    """
    path = _resolve_definition(name_or_path)
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise TopoInputError(f"not valid TOML: {' '.join(str(exc).split())}", path) from None
    except UnicodeDecodeError as exc:
        raise TopoInputError(
            f"not UTF-8 text (byte {exc.start}); a localizer definition is a TOML file", path
        ) from None
    except OSError as exc:
        raise TopoInputError(f"cannot read localizer definition: {exc.strerror}", path) from None
    return _build(data, path.resolve())


def _resolve_definition(name_or_path: str | Path) -> Path:
    text = str(name_or_path)
    as_path = Path(text).expanduser()
    looks_like_path = isinstance(name_or_path, Path) or text.endswith(".toml") or os.sep in text
    if looks_like_path or as_path.is_file():
        if not as_path.is_file():
            raise TopoInputError("localizer definition file not found", as_path)
        return as_path
    shipped = library_root() / f"{text}.toml"
    if shipped.is_file():
        return shipped
    raise TopoInputError(
        f"unknown localizer {text!r}; known: {', '.join(list_localizers())} "
        "(or give the path of a .toml definition)"
    )


# --------------------------------------------------------------------------- validation


def _fail(msg: str, path: Path | None) -> TopoInputError:
    return TopoInputError(msg, path)


def _check_keys(table: Mapping, allowed: set[str], where: str, path: Path | None) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise _fail(
            f"unknown key(s) {', '.join(unknown)} in {where}; "
            f"allowed: {', '.join(sorted(allowed))}",
            path,
        )


def _string(value, key: str, path: Path | None, *, allow_empty: bool = False) -> str:
    if not isinstance(value, str) or (not allow_empty and not value.strip()):
        raise _fail(f"{key} must be a non-empty string", path)
    return value


def _number(value, key: str, path: Path | None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _fail(f"{key} must be a finite number, got {value!r}", path)
    return float(value)


def _integer(value, key: str, path: Path | None, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise _fail(f"{key} must be an integer >= {minimum}, got {value!r}", path)
    return int(value)


def _string_list(value, key: str, path: Path | None) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value:
        raise _fail(f"{key} must be a non-empty list of strings", path)
    return tuple(_string(v, f"{key} entry", path) for v in value)


def _build(data: dict, path: Path | None) -> Localizer:
    _check_keys(data, _TOP_KEYS, "the localizer definition", path)
    missing = [k for k in _REQUIRED_KEYS if k not in data]
    if missing:
        raise _fail(f"missing required key(s): {', '.join(missing)}", path)
    version = data.get("schema_version", SCHEMA_VERSION)
    if version != SCHEMA_VERSION:
        raise _fail(f"schema_version {version!r} not supported (expected {SCHEMA_VERSION})", path)

    name = _string(data["name"], "name", path)
    if not _NAME_RE.match(name):
        raise _fail(f"name {name!r} may hold only letters, digits, '_', '-', '.'", path)
    modality = data["modality"]
    if modality not in MODALITIES:
        raise _fail(f"modality {modality!r} is not one of {', '.join(MODALITIES)}", path)
    stimuli = _string(data["stimuli"], "stimuli", path)
    conditions = _conditions(data["conditions"], path)
    _check_built_set(stimuli, modality, conditions, path)
    analysis = data.get("analysis", "contrast")
    if analysis not in ANALYSES:
        raise _fail(f"analysis {analysis!r} is not one of {', '.join(ANALYSES)}", path)

    root = path.parent if path is not None else Path.cwd()
    folders = _folders(data.get("folders", {}), conditions, root, stimuli, path)
    contrasts = _contrasts(data.get("contrasts", {}), conditions, path)
    if analysis == "contrast" and not contrasts:
        raise _fail("a contrast localizer needs at least one entry in [contrasts]", path)
    default = data.get("default_contrast")
    if default is None and contrasts:
        default = next(iter(contrasts))
    if default is not None and default not in contrasts:
        raise _fail(
            f"default_contrast {default!r} is not a contrast; known: {', '.join(contrasts)}", path
        )

    parcel_category = data.get("parcel_category")
    if parcel_category is not None:
        parcel_category = _string(parcel_category, "parcel_category", path)
    values, unit = _parametric(data.get("parametric"), analysis, conditions, path)
    generator = _generator(data.get("generator"), stimuli, modality, conditions, path)
    _check_generated_values(generator, values, path)
    return Localizer(
        name=name,
        description=_string(data["description"], "description", path),
        modality=modality,
        stimuli=stimuli,
        conditions=conditions,
        contrasts=contrasts,
        default_contrast=default,
        thresholds=_thresholds(data.get("thresholds", {}), path),
        target_region=_string(data.get("target_region", "unspecified"), "target_region", path),
        parcel_category=parcel_category,
        source=_string_list(data["source"], "source", path),
        analysis=analysis,
        values=values,
        value_unit=unit,
        generator=generator,
        path=path,
        folders=folders,
    )


def _check_built_set(stimuli: str, modality: str, conditions, path: Path | None) -> None:
    if not stimuli.startswith(BUILD_PREFIX):
        return
    from topocli.stimuli.builders.sets import SETS

    name = stimuli[len(BUILD_PREFIX) :]
    if name not in SETS:
        raise _fail(
            f"stimuli = {stimuli!r} names no buildable set; known: "
            f"{', '.join(BUILD_PREFIX + k for k in SETS)}",
            path,
        )
    built = SETS[name]
    if built.modality != modality:
        raise _fail(
            f"stimuli = {stimuli!r} builds {built.modality} stimuli but modality is {modality!r}",
            path,
        )
    missing = [c for c in conditions if c not in built.condition_names]
    if missing:
        raise _fail(
            f"set {name!r} has no condition(s) {', '.join(missing)}; it builds: "
            f"{', '.join(built.condition_names)}",
            path,
        )


def _conditions(value, path: Path | None) -> tuple[str, ...]:
    conds = _string_list(value, "conditions", path)
    if len(conds) < 2:
        raise _fail("conditions must list at least two conditions", path)
    bad = [c for c in conds if not _IDENT_RE.match(c)]
    if bad:
        raise _fail(
            f"condition name(s) {', '.join(map(repr, bad))} must be identifiers "
            "(letters, digits, '_', not starting with a digit)",
            path,
        )
    dupes = sorted({c for c in conds if conds.count(c) > 1})
    if dupes:
        raise _fail(f"duplicate condition(s): {', '.join(dupes)}", path)
    return conds


def _folders(value, conditions, root: Path, stimuli: str, path: Path | None) -> dict[str, Path]:
    if not isinstance(value, dict):
        raise _fail("[folders] must be a table of condition = folder", path)
    unknown = [c for c in value if c not in conditions]
    if unknown:
        raise _fail(
            f"[folders] names unknown condition(s) {', '.join(unknown)}; "
            f"known conditions: {', '.join(conditions)}",
            path,
        )
    if value and stimuli in ("user", "generated"):
        raise _fail(f"[folders] cannot be used with stimuli = {stimuli!r}", path)
    return {c: (root / _string(f, f"folders.{c}", path)).resolve() for c, f in value.items()}


def _contrasts(value, conditions, path: Path | None) -> dict[str, Contrast]:
    if not isinstance(value, dict):
        raise _fail("[contrasts] must be a table of name = expression", path)
    out = {}
    for name, spec in value.items():
        if not _NAME_RE.match(name):
            raise _fail(f"contrast name {name!r} may hold only letters, digits, '_-.'", path)
        if isinstance(spec, str):
            spec = {"expression": spec}
        if not isinstance(spec, dict):
            raise _fail(f"contrast {name!r} must be a string or a table with 'expression'", path)
        _check_keys(spec, _CONTRAST_KEYS, f"contrast {name!r}", path)
        if "expression" not in spec:
            raise _fail(f"contrast {name!r} has no expression", path)
        expr = _string(spec["expression"], f"contrast {name!r} expression", path)
        weights = _checked_weights(expr, conditions, path, f"contrast {name!r}")
        region = spec.get("target_region")
        category = spec.get("parcel_category")
        parcels = spec.get("parcels", [])
        if not isinstance(parcels, list) or not all(isinstance(p, str) for p in parcels):
            raise _fail(f"contrast {name!r} parcels must be a list of strings", path)
        out[name] = Contrast(
            name=name,
            expression=expr,
            weights=weights,
            target_region=None if region is None else _string(region, "target_region", path),
            parcel_category=None if category is None else _string(category, "category", path),
            parcels=tuple(parcels),
        )
    return out


def _checked_weights(expr: str, conditions, path: Path | None, where: str) -> dict[str, float]:
    from topocli.stats.contrasts import parse_contrast

    try:
        weights = parse_contrast(expr, conditions)
    except TopoInputError as exc:
        raise _fail(f"{where}: {exc}", path) from None
    if not any(w > 0 for w in weights.values()) or not any(w < 0 for w in weights.values()):
        raise _fail(f"{where} needs positive and negative weights: {expr!r}", path)
    total = sum(weights.values())
    scale = sum(abs(w) for w in weights.values())
    if abs(total) > 1e-9 * max(scale, 1.0):
        raise _fail(f"{where} weights must sum to zero (they sum to {total:g}): {expr!r}", path)
    return weights


def _thresholds(value, path: Path | None) -> Thresholds:
    if not isinstance(value, dict):
        raise _fail("[thresholds] must be a table", path)
    _check_keys(value, _THRESHOLD_KEYS, "[thresholds]", path)
    d = Thresholds()
    q = _number(value.get("q", d.q), "thresholds.q", path)
    if not 0 < q < 1:
        raise _fail(f"thresholds.q must be in (0, 1), got {q:g}", path)
    top = _number(value.get("top_percent", d.top_percent), "thresholds.top_percent", path)
    if not 0 < top <= 100:
        raise _fail(f"thresholds.top_percent must be in (0, 100], got {top:g}", path)
    fwhm = _number(value.get("fwhm_mm", d.fwhm_mm), "thresholds.fwhm_mm", path)
    if fwhm < 0:
        raise _fail(f"thresholds.fwhm_mm must be >= 0, got {fwhm:g}", path)
    alt = value.get("alternative", d.alternative)
    if alt not in ALTERNATIVES:
        raise _fail(f"thresholds.alternative {alt!r} is not one of {', '.join(ALTERNATIVES)}", path)
    min_cluster = _integer(value.get("min_cluster", d.min_cluster), "min_cluster", path, 1)
    return Thresholds(q=q, top_percent=top, fwhm_mm=fwhm, alternative=alt, min_cluster=min_cluster)


def _parametric(value, analysis: str, conditions, path: Path | None):
    if value is None:
        if analysis == "parametric":
            raise _fail("analysis = 'parametric' needs a [parametric] table with values", path)
        return {}, None
    if analysis != "parametric":
        raise _fail("[parametric] is only allowed with analysis = 'parametric'", path)
    if not isinstance(value, dict):
        raise _fail("[parametric] must be a table", path)
    _check_keys(value, _PARAMETRIC_KEYS, "[parametric]", path)
    raw = value.get("values")
    if not isinstance(raw, dict):
        raise _fail("[parametric] values must be a table of condition = number or [x, y]", path)
    if set(raw) != set(conditions):
        raise _fail(
            f"[parametric] values must give every condition exactly: {', '.join(conditions)}", path
        )
    values = {}
    for cond in conditions:
        v = raw[cond]
        items = v if isinstance(v, list) else [v]
        if not items:
            raise _fail(f"parametric value of {cond!r} is empty", path)
        values[cond] = tuple(_number(x, f"parametric value of {cond!r}", path) for x in items)
    if len({len(v) for v in values.values()}) != 1:
        raise _fail("parametric values must all have the same length", path)
    unit = value.get("unit")
    return values, (None if unit is None else _string(unit, "parametric.unit", path))


def _generator(value, stimuli: str, modality: str, conditions, path: Path | None):
    if stimuli != "generated":
        if value is not None:
            raise _fail("[generator] is only allowed with stimuli = 'generated'", path)
        return None
    if not isinstance(value, dict):
        raise _fail("stimuli = 'generated' needs a [generator] table", path)
    kind = value.get("kind")
    if kind not in GENERATORS:
        raise _fail(f"generator.kind {kind!r} is not one of {', '.join(GENERATORS)}", path)
    _check_keys(value, _GENERATOR_KEYS[kind], f"[generator] ({kind})", path)
    want = {"retinotopy": "image", "tonotopy": "audio"}[kind]
    if modality != want:
        raise _fail(f"generator {kind!r} makes {want} stimuli but modality is {modality!r}", path)
    gen = dict(value)
    if kind == "retinotopy":
        pos = gen.get("positions")
        if not isinstance(pos, dict) or not pos:
            raise _fail("generator.positions must be a table of condition = [x, y]", path)
        for cond, xy in pos.items():
            ok = isinstance(xy, list) and len(xy) == 2
            if not ok or not all(0 <= _number(v, f"position {cond}", path) <= 1 for v in xy):
                raise _fail(f"generator position {cond!r} must be [x, y] in [0, 1]", path)
        names = list(pos)
    else:
        freqs = gen.get("frequencies_hz")
        if not isinstance(freqs, list) or not freqs:
            raise _fail("generator.frequencies_hz must be a non-empty list", path)
        names = [tone_name(_number(f, "generator.frequencies_hz", path)) for f in freqs]
    if list(conditions) != names:
        raise _fail(
            f"conditions must be the generated conditions in order: {', '.join(names)}", path
        )
    return gen


def _check_generated_values(generator, values, path: Path | None) -> None:
    if generator is None or not values:
        return
    if generator["kind"] == "tonotopy":
        expected = {tone_name(float(f)): (float(f),) for f in generator["frequencies_hz"]}
    else:
        expected = {k: tuple(float(x) for x in v) for k, v in generator["positions"].items()}
    if values != expected:
        raise _fail("[parametric] values must equal the generator's frequencies / positions", path)


# --------------------------------------------------------------------------- for commands
@dataclass
class LocalizerSpec:
    """What a command needs from a localizer definition (see :func:`resolve_localizer`).

    ``obj`` is the :class:`Localizer` it was read from: its ``stimulus_folders()`` gives shipped
    stimuli, its ``generate(dir)`` generated ones.
    """

    name: str
    conditions: list[str]
    contrasts: dict[str, dict[str, float]]
    default_contrasts: list[str]
    defaults: dict
    anova_conditions: list[str] | None = None
    path: Path | None = None
    source: list[str] | None = None
    generated: bool = False
    user_stimuli: bool = False
    obj: Localizer | None = None

    def stimulus_set(self, stack: ExitStack) -> StimulusSet:
        """The localizer's own stimuli (generated ones go to a temp folder ``stack`` removes)."""
        if self.user_stimuli or self.obj is None:
            raise TopoInputError(
                f"localizer {self.name!r} needs your stimuli: pass --stimuli DIR with one "
                f"sub-folder per condition ({', '.join(self.conditions)})"
            )
        if self.generated:
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="topo-stimuli-")))
            folders = self.obj.generate(tmp)
        else:
            folders = self.obj.stimulus_folders()
        return load_condition_folders({str(k): Path(v) for k, v in dict(folders).items()})


def resolve_localizer(name_or_path: str | Path) -> LocalizerSpec:
    """Load a shipped localizer (by name) or a ``.toml`` definition for a command.

    The definition's thresholds become the defaults of the options left unset; a ``parametric``
    localizer (tonotopy, retinotopy) also gets a one-way ANOVA across all its conditions.
    """
    from dataclasses import asdict

    loc = load_localizer(name_or_path)
    contrasts = {str(k): dict(c.weights) for k, c in loc.contrasts.items()}
    primary = loc.default_contrast or next(iter(contrasts), None)
    return LocalizerSpec(
        name=loc.name,
        conditions=list(loc.conditions),
        contrasts=contrasts,
        # every contrast of the localizer, its primary one first (the one a single map stands for)
        default_contrasts=[primary] + [c for c in contrasts if c != primary] if primary else [],
        defaults=asdict(loc.thresholds),
        anova_conditions=list(loc.conditions) if loc.analysis == "parametric" else None,
        path=loc.path,
        source=list(loc.source),
        generated=loc.stimuli == "generated",
        user_stimuli=loc.stimuli == "user",
        obj=loc,
    )


def resolve_contrasts(
    spec: LocalizerSpec, contrast: Sequence[str] | None, conditions: Sequence[str]
) -> dict[str, dict[str, float]]:
    """``--contrast`` values -> contrast name -> weights.

    With no ``--contrast``, every contrast of the localizer, its primary one
    (``default_contrast``) first. A value may be a contrast's name or any spelling of it
    (``a>b``, ``a-b``, ``a - b``, ``1*a - 1*b`` are one contrast): one that equals a named
    contrast takes that name, any other gets its canonical name
    (:func:`topocli.stats.contrasts.contrast_name`), so the same contrast always finds the same
    columns downstream.
    """
    from topocli.stats.contrasts import match_contrast

    chosen = list(contrast) if contrast else list(spec.default_contrasts)
    if not chosen:
        raise TopoInputError(
            f"localizer {spec.name!r} defines no default contrast; pass --contrast "
            f"(conditions: {', '.join(conditions)})"
        )
    out: dict[str, dict[str, float]] = {}
    for expr in chosen:
        try:
            name, weights = match_contrast(str(expr), spec.contrasts, conditions)
        except TopoInputError as exc:
            named = f"; its contrasts: {', '.join(spec.contrasts)}" if spec.contrasts else ""
            raise TopoInputError(
                f"--contrast {expr!r} is not a contrast of localizer {spec.name!r}{named} ({exc})"
            ) from None
        out[name] = weights
    return out
