"""``topo screen``: category-selective territories on the sheet, ranked by novelty.

Three ways in, one analysis:

- ``--stimuli DIR`` with sub-folders: every sub-folder is a category, each tested against all the
  others (its *rest*). One extraction pass streams every stimulus into sufficient statistics per
  (category, split); the rest of category ``k`` comes from the totals minus the category
  (:func:`topocli.stats.contrasts.category_vs_rest`), so K categories cost one pass and one vectorised
  t computation, not K. ``--with-baseline`` (or ``--against``) adds a baseline pool as an extra
  reference group: the rest then also holds the baseline, and every category is also reported
  against the baseline alone (rows with ``reference = baseline`` in ``units.csv``).
- ``--stimuli DIR`` with one category (a folder of files, or one sub-folder): the category
  against a baseline pool (default: the project's shipped mixed baseline for the modality;
  ``--against DIR`` for another).
- ``--discover POOL``: an unlabeled pool (see *Discovery*); every discovered cluster of stimuli
  is then screened like a category, against the rest of the pool.

Per category
    One-sided Welch t (category > reference), BH-FDR over the sheet, significant units
    (``q < --q`` and ``t > 0``), clusters of significant units (``--min-cluster``,
    ``--connectivity``), peak t, mean t over the significant units, island Moran's I (mean over
    the clusters, ``--permutations``), and the split-half response profile: the category's fROI
    (top ``--top-percent`` % of units of its t map, whole sheet) is defined on the even half of
    the stimuli and every category's response is read on the odd half, and vice versa
    (:func:`topocli.stats.froi.froi_profiles`). ``heldout_effect`` is the fROI's held-out response to
    its own category minus its mean held-out response to the other conditions: it is
    cross-validated, so it stays honest where the t map is not (discovered clusters).

Novelty
    ``novelty = 1 - max_j Dice(S, K_j)`` where ``S`` is the category's set of significant units
    and ``K_j`` the significant units of known localizer ``j``: the language (sentences >
    non-words), theory-of-mind (false belief > false photo) and multiple-demand (math > stories)
    localizers run with :func:`topocli.workflows.localize.run.localize` on the same model with the shipped
    stimuli, the same ``--q`` and ``--fwhm-mm`` (their significance masks are cached in the
    activation cache), plus every ``--known`` localize results folder (its ``units.csv``
    ``significant`` column; a folder made on another model is refused). A category with no
    significant unit has no map to compare: its Dice and novelty are empty (NaN).

Rank
    ``rank`` orders the categories by the number of significant units (the size of their
    selective territory; ``--rank-by peak-t``: by peak t), ties broken by higher novelty, then
    by higher peak t, then by name. Rank 1 is the strongest category-selective territory.

Exemplars
    For every category, the ``--exemplars`` stimuli of that category with the highest mean
    response over the units of its largest cluster (no cluster: its significant units; none
    significant: its top 1 % units by t). This needs per-stimulus activations, read a second
    time from memory or from the float16 activation cache.

Discovery
    Each pool stimulus is embedded with the model's own pooled final representation
    (:func:`topocli.activations.extraction.final_representation`, L2-normalised), a Ward hierarchical
    clustering is built (``scipy.cluster.hierarchy.linkage``) and walked top-down. A node's
    *sheet selectivity score* is the median Welch t of the node's stimuli against all the other
    pool stimuli, taken over the node's significant units (BH q < ``--q`` and t > 0 among the
    units of the sheet, or of ``--area``); a node with no significant unit scores its peak t.
    The median over *every* unit of the sheet would be blind to a selective patch covering a few
    percent of the sheet, and a median over a fixed top share of units rewards merging groups
    (two territories fill it better than one); the median over the significant units does
    neither: merging two groups with different territories halves the effect in each, and
    splitting one group in two lowers t by the lost sample size. The root is always split; a
    node larger than ``--max-size`` is always split; otherwise a node is split only when one of
    its children (of at least ``--min-size`` stimuli) scores higher than the node itself, else
    it is kept as a cluster.
    Children smaller than ``--min-size`` are dropped (their stimuli stay unassigned). Kept
    clusters are named ``discovered_01, discovered_02, ...`` by decreasing score and screened
    against the rest of the pool. The clusters were chosen with the same responses that are then
    tested, so their p values are optimistic; the split-half ``heldout_effect`` is not.

Memory
    Per-stimulus sheet activations are needed again after the statistics pass (exemplars, every
    level of the discovery walk). They are kept in memory as float32 when ``N x U x 4`` bytes
    fits in ``IN_MEMORY_BYTES`` (1 GiB): a pool of 3,000 stimuli on MiniLM's 2,304-unit sheet
    is 28 MB. Larger pools (3,000 stimuli x 100,000 units = 1.2 GB) are streamed from the
    float16 activation cache (half the size, on disk) once per level of the walk: every level's
    candidate nodes are disjoint, so one pass gives all their statistics. The statistics
    themselves never grow with the number of stimuli.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from topocli.errors import TopoInputError
from topocli.sheet import Sheet
from topocli.stats.suffstats import SufficientStats, chan_merge
from topocli.stimuli.stimulus_set import Stimulus, StimulusSet

MIN_STIMULI = 4
BASELINE = "baseline"
UNASSIGNED = "unassigned"
BUILTIN_KNOWN = ("language", "tom", "md")
IN_MEMORY_BYTES = 1 << 30
RANK_BY = ("units", "peak-t")
REPORT_MAX_CATEGORIES = 30  # per-category report sections (all categories are in the files)
REPORT_MAX_HEATMAP = 40  # rows of the Dice / profile heatmaps
FINAL_FILE = "final.safetensors"
KNOWN_CACHE_VERSION = 1
CATEGORY_COLUMNS = [
    "category",
    "n_stimuli",
    "n_significant_units",
    "n_clusters",
    "peak_t",
    "moran_i",
    "best_known_match",
    "max_dice",
    "novelty",
    "rank",
    "mean_t",
    "heldout_effect",
    "reference",
    "exemplars",
]
CLUSTER_COLUMNS = [
    "category",
    "cluster",
    "areas",
    "n_units",
    "peak_t",
    "mean_t",
    "centroid_x_mm",
    "centroid_y_mm",
    "moran_i",
    "moran_p",
    "peak_unit",
]
UNIT_COLUMNS = ["category", "reference", "unit", "area", "row", "col", "t", "q", "significant"]
EXEMPLAR_COLUMNS = ["category", "exemplar", "stimulus", "id", "response", "units"]
DISCOVERY_COLUMNS = [
    "node",
    "parent",
    "level",
    "n_stimuli",
    "score",
    "best_child_score",
    "decision",
    "cluster",
]
# fallback definitions of the known localizers (used when topocli.stimuli.localizers cannot load them):
# condition -> folder under localizers/, contrast weights, contrast name
_FALLBACK_KNOWN: dict[str, tuple[dict[str, str], dict[str, float], str]] = {
    "language": (
        {"sentences": "language/sentences", "nonwords": "language/nonwords"},
        {"sentences": 1.0, "nonwords": -1.0},
        "sentences>nonwords",
    ),
    "tom": (
        {"false_belief": "tom/false_belief", "false_photo": "tom/false_photo"},
        {"false_belief": 1.0, "false_photo": -1.0},
        "false_belief>false_photo",
    ),
    "md": (
        {"math": "md/math", "false_belief": "tom/false_belief", "false_photo": "tom/false_photo"},
        {"math": 1.0, "false_belief": -0.5, "false_photo": -0.5},
        "math>stories",
    ),
}


# ---------------------------------------------------------------------- options and results
@dataclass
class ScreenOptions:
    """Every analysis option of a screen (the CLI's flags, with their defaults)."""

    q: float = 0.05
    fdr_scope: str = "sheet"
    min_cluster: int = 8
    connectivity: int = 8
    permutations: int = 999
    seed: int = 0
    top_percent: float = 10.0
    fwhm_mm: float = 0.0
    across_areas: bool = False
    n_exemplars: int = 5
    rank_by: str = "units"
    pooling: str = "mean"
    batch_size: int = 128
    use_cache: bool = True
    min_size: int = 10
    max_size: int | None = None
    area: str | None = None
    memory_bytes: int = IN_MEMORY_BYTES

    def check(self) -> None:
        """One-line TopoInputError for any option out of range (before the model runs)."""
        from topocli.workflows.localize.run import check_options

        check_options(
            self.q,
            "greater",
            self.fdr_scope,
            self.top_percent,
            self.min_cluster,
            self.connectivity,
            self.permutations,
            self.fwhm_mm,
            self.pooling,
        )
        if self.rank_by not in RANK_BY:
            raise TopoInputError(f"--rank-by must be one of {', '.join(RANK_BY)}")
        if int(self.n_exemplars) < 0:
            raise TopoInputError(f"--exemplars must be >= 0, got {self.n_exemplars}")
        if int(self.batch_size) < 1:
            raise TopoInputError(f"--batch-size must be >= 1, got {self.batch_size}")
        if self.min_size < MIN_STIMULI:
            raise TopoInputError(
                f"--min-size must be at least {MIN_STIMULI} (2 stimuli per split), "
                f"got {self.min_size}"
            )
        if self.max_size is not None and self.min_size > self.max_size:
            raise TopoInputError(
                f"--min-size {self.min_size} is larger than --max-size {self.max_size}"
            )

    def as_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out.pop("memory_bytes")
        return out


@dataclass
class KnownMap:
    """A known localizer's significance map on the same sheet."""

    name: str
    source: str
    significant: np.ndarray
    t: np.ndarray | None = None
    contrast: str = ""

    @property
    def n_significant(self) -> int:
        return int(np.count_nonzero(self.significant))


@dataclass
class CategoryResult:
    """Maps and numbers of one screened category (arrays are per sheet unit)."""

    name: str
    n_stimuli: int
    reference: str
    t: np.ndarray
    df: np.ndarray
    p: np.ndarray
    q: np.ndarray
    d: np.ndarray
    significant: np.ndarray
    labels: np.ndarray
    clusters: pd.DataFrame
    moran_mean: float
    t_split: np.ndarray
    vs_baseline: dict[str, np.ndarray] | None = None
    heldout_effect: float = float("nan")
    best_known: str = ""
    max_dice: float = float("nan")
    novelty: float = float("nan")
    rank: int = 0
    exemplar_rows: list[int] = field(default_factory=list)
    exemplar_scores: list[float] = field(default_factory=list)
    exemplar_units: str = ""

    @property
    def n_significant(self) -> int:
        return int(np.count_nonzero(self.significant))

    @property
    def n_clusters(self) -> int:
        return len(self.clusters)

    @property
    def peak_t(self) -> float:
        t = self.t[np.isfinite(self.t)]
        return float(t.max()) if t.size else float("nan")

    @property
    def mean_t(self) -> float:
        sel = self.significant & np.isfinite(self.t)
        return float(self.t[sel].mean()) if sel.any() else float("nan")


@dataclass
class Discovery:
    """Result of :func:`discover_clusters`."""

    labels: np.ndarray
    names: list[str]
    scores: list[float]
    log: pd.DataFrame
    linkage: np.ndarray
    kept_nodes: list[int]


@dataclass
class ScreenResult:
    """Everything a screen computed; written by :func:`write_screen_results`."""

    sheet: Sheet
    stim_set: StimulusSet
    conditions: list[str]
    categories: list[CategoryResult]
    profiles: pd.DataFrame
    stats: SufficientStats
    known: list[KnownMap]
    dice: pd.DataFrame
    params: dict[str, Any]
    mode: str
    discovery: Discovery | None = None
    cache_key: str | None = None
    from_cache: bool = False
    notes: list[str] = field(default_factory=list)
    exemplars: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=EXEMPLAR_COLUMNS))

    def category_table(self) -> pd.DataFrame:
        """``categories.csv``: one row per category, in rank order."""
        rows = []
        for c in self.categories:
            snippets = [self.stim_set.stimuli[i].label for i in c.exemplar_rows[:3]]
            row = {
                "category": c.name,
                "n_stimuli": c.n_stimuli,
                "n_significant_units": c.n_significant,
                "n_clusters": c.n_clusters,
                "peak_t": c.peak_t,
                "moran_i": c.moran_mean,
                "best_known_match": c.best_known,
                "max_dice": c.max_dice,
                "novelty": c.novelty,
                "rank": c.rank,
                "mean_t": c.mean_t,
                "heldout_effect": c.heldout_effect,
                "reference": c.reference,
                "exemplars": " | ".join(snippets),
            }
            if c.vs_baseline is not None:
                row["n_significant_vs_baseline"] = int(c.vs_baseline["significant"].sum())
                tb = c.vs_baseline["t"][np.isfinite(c.vs_baseline["t"])]
                row["peak_t_vs_baseline"] = float(tb.max()) if tb.size else float("nan")
            rows.append(row)
        extra = [k for k in (rows[0] if rows else {}) if k not in CATEGORY_COLUMNS]
        return pd.DataFrame(rows, columns=CATEGORY_COLUMNS + extra)


# ---------------------------------------------------------------------- shipped stimuli
def localizers_root() -> Path:
    """Folder of the shipped localizer definitions and stimuli (installed or in the repo)."""
    try:
        import topocli.stimuli.localizers as pkg

        for p in getattr(pkg, "__path__", []) or []:
            if Path(p).is_dir():
                return Path(p)
    except ImportError:
        pass
    for cand in (Path(__file__).parent / "localizers", Path(__file__).parents[1] / "localizers"):
        if cand.is_dir():
            return cand
    raise TopoInputError("cannot find the shipped localizers folder; reinstall topo")


def _call_optional(fn: Any, modality: str) -> Any:
    for call in (lambda: fn(modality=modality), lambda: fn(modality), lambda: fn()):
        try:
            return call()
        except TypeError:
            continue
    return None


def as_stimulus_set(obj: Any, what: str) -> StimulusSet:
    """A StimulusSet from a folder, a CSV, a {condition: folder} mapping or a list of folders."""
    from topocli.stimuli.stimulus_set import load_condition_folders, load_stimulus_set

    if isinstance(obj, StimulusSet):
        return obj
    if isinstance(obj, (str, os.PathLike)):
        return load_stimulus_set(obj)
    if isinstance(obj, Mapping):
        return load_condition_folders({str(k): Path(v) for k, v in obj.items()})
    if isinstance(obj, Iterable):
        folders = [Path(p) for p in obj]
        return load_condition_folders({p.name: p for p in folders})
    raise TopoInputError(f"cannot read the {what} ({type(obj).__name__})")


def shipped_categories(modality: str = "text") -> StimulusSet:
    """The project's shipped category sets (``localizers/categories``) for a modality."""
    try:
        from topocli.stimuli.localizers import shipped_category_sets
    except ImportError:
        shipped_category_sets = None
    if shipped_category_sets is not None:
        obj = _call_optional(shipped_category_sets, modality)
        if obj:
            return as_stimulus_set(obj, "shipped category sets")
    folder = localizers_root() / "categories"
    if modality != "text" or not folder.is_dir():
        raise TopoInputError(f"no shipped category sets for {modality}; pass --stimuli DIR")
    from topocli.stimuli.stimulus_set import load_stimulus_set

    return load_stimulus_set(folder)


def shipped_baseline(modality: str = "text") -> StimulusSet:
    """The project's shipped mixed baseline pool (``localizers/baseline``) for a modality."""
    try:
        from topocli.stimuli.localizers import baseline_pool
    except ImportError:
        baseline_pool = None
    if baseline_pool is not None:
        obj = _call_optional(baseline_pool, modality)
        if obj:
            return as_stimulus_set(obj, "shipped baseline pool")
    folder = localizers_root() / "baseline"
    if modality != "text" or not folder.is_dir():
        raise TopoInputError(f"no shipped baseline pool for {modality} stimuli; pass --against DIR")
    from topocli.stimuli.stimulus_set import load_stimulus_set

    return load_stimulus_set(folder)


# ---------------------------------------------------------------------- input checks
def _condition_folder(stim_set: StimulusSet, condition: str) -> Path:
    for s in stim_set.stimuli:
        if s.condition == condition and s.path is not None:
            return s.path.parent
    return Path(stim_set.root)


def check_categories(stim_set: StimulusSet, minimum: int = MIN_STIMULI) -> None:
    """Every category needs ``minimum`` stimuli (2 per split); name the first that has fewer."""
    for cond, n in stim_set.counts().items():
        if n < minimum:
            raise TopoInputError(
                f"category {cond!r} has {n} stimul{'us' if n == 1 else 'i'}; "
                f"need at least {minimum}",
                _condition_folder(stim_set, cond),
            )


def _stimuli_hash(stimuli: Iterable[Stimulus]) -> str:
    """Order- and name-independent hash of a list of stimuli (sorted per-stimulus digests)."""
    digests = sorted(hashlib.sha256(s.content_bytes()).hexdigest() for s in stimuli)
    return hashlib.sha256("\n".join(digests).encode()).hexdigest()


def _folders(stimuli: Iterable[Stimulus]) -> set[Path]:
    return {s.path.parent.resolve() for s in stimuli if s.path is not None}


def check_not_in_baseline(categories: StimulusSet, baseline: StimulusSet) -> None:
    """A category folder must not also be (a part of) the baseline: same path or same content."""
    base_dirs = _folders(baseline.stimuli) | {Path(baseline.root).resolve()}
    base_hashes = {_stimuli_hash(baseline.stimuli)}
    by_condition: dict[str, list[Stimulus]] = {}
    by_file: dict[Path, list[Stimulus]] = {}
    for s in baseline.stimuli:
        by_condition.setdefault(s.condition, []).append(s)
        if s.path is not None:
            by_file.setdefault(s.path, []).append(s)
    base_hashes |= {_stimuli_hash(v) for v in by_condition.values()}
    base_hashes |= {_stimuli_hash(v) for v in by_file.values()}
    for cond in categories.conditions:
        members = [s for s in categories.stimuli if s.condition == cond]
        folder = _condition_folder(categories, cond)
        if _folders(members) & base_dirs:
            raise TopoInputError(
                f"category {cond!r} is also in the baseline pool ({baseline.root}); "
                "pass another --against",
                folder,
            )
        if _stimuli_hash(members) in base_hashes:
            raise TopoInputError(
                f"category {cond!r} has the same stimuli as (part of) the baseline pool "
                f"({baseline.root}); pass another --against",
                folder,
            )


def relabel(stimuli: Sequence[Stimulus], conditions: Sequence[str]) -> list[Stimulus]:
    """The stimuli with new conditions; splits reassigned even/odd in order within each."""
    seen: dict[str, int] = {}
    out = []
    for s, cond in zip(stimuli, conditions, strict=True):
        i = seen.get(cond, 0)
        seen[cond] = i + 1
        out.append(dataclasses.replace(s, condition=cond, split=i % 2))
    return out


def with_baseline_group(categories: StimulusSet, baseline: StimulusSet) -> tuple[StimulusSet, str]:
    """The categories plus the whole baseline pool as one more condition (returns its name)."""
    name = BASELINE
    while name in categories.conditions:
        name = f"_{name}"
    base = relabel(baseline.stimuli, [name] * len(baseline))
    combined = StimulusSet(
        Path(categories.root), list(categories.stimuli) + base, [*categories.conditions, name]
    )
    return combined, name


def load_pool(folder: str | Path) -> StimulusSet:
    """An unlabeled pool: every stimulus under ``folder`` (sub-folders ignored as labels)."""
    from topocli.stimuli.stimulus_set import load_stimulus_set

    root = Path(folder)
    if root.is_dir() and not any(
        p for p in root.rglob("*") if p.is_file() and not p.name.startswith(".")
    ):
        raise TopoInputError("the discovery pool is empty", root)
    try:
        pool = load_stimulus_set(root)
    except TopoInputError as exc:
        if "empty" in str(exc) or "no stimuli" in str(exc):
            raise TopoInputError("the discovery pool is empty", root) from None
        raise
    if len(pool) == 0:
        raise TopoInputError("the discovery pool is empty", root)
    return StimulusSet(root, relabel(pool.stimuli, ["pool"] * len(pool)), ["pool"])


def check_modality(model: Any, stim_set: StimulusSet, hint: str = "") -> None:
    """The model must take the stimuli's modality (one-line error otherwise)."""
    mods = getattr(model, "modalities", None)
    if mods is None:
        return
    modality = stim_set.modality
    if modality not in mods:
        have = ", ".join(sorted(mods)) or "nothing"
        raise TopoInputError(
            f"{modality} categories, but this model takes {have}{hint}", stim_set.root
        )


# ---------------------------------------------------------------------- activations
class ActivationSource:
    """Per-stimulus raw sheet activations for second passes: in memory or the float16 cache.

    Parameters
    ----------
    n_rows, n_units : int
    array : ndarray [N, U], optional
        Activations held in memory.
    folder : Path, optional
        A finished activation-cache folder (read shard by shard).
    cleanup : bool
        Delete ``folder`` on :meth:`close` (a temporary cache).
    """

    def __init__(
        self,
        n_rows: int,
        n_units: int,
        array: np.ndarray | None = None,
        folder: Path | None = None,
        cleanup: bool = False,
    ) -> None:
        if array is None and folder is None:
            raise ValueError("an activation source needs an array or a cache folder")
        self.n_rows = int(n_rows)
        self.n_units = int(n_units)
        self.array = array
        self.folder = folder
        self.cleanup = cleanup

    @classmethod
    def from_array(cls, x: np.ndarray) -> ActivationSource:
        x = np.asarray(x, dtype=np.float32)
        return cls(x.shape[0], x.shape[1], array=x)

    @property
    def in_memory(self) -> bool:
        return self.array is not None

    def batches(self, rows_per_batch: int = 2048) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield ``(row indices, float32 activations [B, U])``."""
        if self.array is not None:
            for s in range(0, self.n_rows, rows_per_batch):
                rows = np.arange(s, min(s + rows_per_batch, self.n_rows))
                yield rows, self.array[s : s + rows_per_batch]
            return
        from topocli.activations.extraction import read_cache

        for rows, acts in read_cache(self.folder):
            yield rows, acts.numpy()

    def close(self) -> None:
        if self.cleanup and self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None


@dataclass
class Collected:
    """One extraction pass: statistics per (condition, split), the activations, final reps."""

    stats: SufficientStats
    source: ActivationSource
    final: np.ndarray | None
    cache_key: str | None
    from_cache: bool


def _apply(x: np.ndarray, transform: Any) -> np.ndarray:
    return x if transform is None else np.asarray(transform(x), dtype=np.float32)


def _save_final(folder: Path, final: np.ndarray) -> None:
    from safetensors.numpy import save_file

    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".final.", suffix=".tmp")
    os.close(fd)
    try:
        save_file({"final": np.ascontiguousarray(final, dtype=np.float32)}, tmp)
        os.replace(tmp, folder / FINAL_FILE)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _load_final(path: Path) -> np.ndarray:
    from safetensors.numpy import load_file

    return load_file(str(path))["final"]


def collect_activations(
    model: Any,
    stim_set: StimulusSet,
    batch_size: int = 128,
    pooling: str = "mean",
    transform: Any = None,
    use_cache: bool = True,
    with_final: bool = False,
    progress: Any = None,
    memory_bytes: int = IN_MEMORY_BYTES,
) -> Collected:
    """One pass over the stimuli: statistics per group ``2 * condition + split`` and a source.

    The statistics see ``transform(acts)`` (smoothing); the source keeps raw activations, in
    memory when ``N x U x 4`` bytes fit ``memory_bytes``, otherwise in the float16 activation
    cache (a temporary one when ``use_cache`` is off). With the cache on, activations are
    rounded to float16 before anything sees them, so a first run and a cached rerun give the
    same bytes. With ``with_final`` the model's final representation per stimulus is returned
    (and cached beside the activations).
    """
    from topocli.activations import extraction

    n, u = len(stim_set), int(model.sheet.n_units)
    groups = stim_set.group_index()
    stats = SufficientStats(stim_set.n_groups, u)
    keep = n * u * 4 <= memory_bytes
    key = extraction.cache_key(model, stim_set, pooling) if use_cache else None
    folder = extraction.activation_cache_dir() / key if key else None
    done = folder is not None and (folder / "done.json").is_file()
    x = np.empty((n, u), dtype=np.float32) if keep else None
    if done and (not with_final or (folder / FINAL_FILE).is_file()):
        for rows, acts in extraction.read_cache(folder):
            a = acts.numpy()
            if x is not None:
                x[rows] = a
            stats.update(_apply(a, transform), groups[rows])
        final = _load_final(folder / FINAL_FILE) if with_final else None
        source = ActivationSource(n, u, array=x, folder=None if keep else folder)
        return Collected(stats, source, final, key, True)
    import torch

    writer = None
    cleanup = False
    if key is not None and not done:
        writer = extraction._CacheWriter(key, u)
    elif key is None and not keep:  # large and no cache wanted: a temporary cache
        writer = extraction._CacheWriter(f"screen-tmp-{uuid.uuid4().hex}", u)
        cleanup = True
    round16 = key is not None or not keep
    finals: np.ndarray | None = None
    try:
        for rows, acts, fin in extraction.iter_activations(
            model, stim_set, batch_size, pooling, with_final, progress
        ):
            acts = acts.detach().to("cpu")
            if round16:
                acts = acts.to(torch.float16)
            if writer is not None:
                writer.add(rows, acts)
            a = acts.float().numpy()
            if x is not None:
                x[rows] = a
            stats.update(_apply(a, transform), groups[rows])
            if fin is not None:
                f = fin.detach().float().cpu().numpy()
                if finals is None:
                    finals = np.zeros((n, f.shape[1]), dtype=np.float32)
                finals[rows] = f
        if writer is not None:
            writer.finish()
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    if with_final and finals is not None and folder is not None and folder.is_dir():
        _save_final(folder, finals)
    if keep:
        source = ActivationSource(n, u, array=x)
    else:
        source = ActivationSource(n, u, folder=writer.final, cleanup=cleanup)
    return Collected(stats, source, finals, key, False)


def grouped_stats(
    source: ActivationSource, groups: np.ndarray, n_groups: int, transform: Any = None
) -> SufficientStats:
    """Statistics per group from a source in one pass (rows with group < 0 are left out)."""
    groups = np.asarray(groups, dtype=np.int64)
    stats = SufficientStats(n_groups, source.n_units)
    for rows, acts in source.batches():
        g = groups[rows]
        keep = g >= 0
        if keep.any():
            stats.update(_apply(acts[keep], transform), g[keep])
    return stats


def project(source: ActivationSource, weights: np.ndarray, transform: Any = None) -> np.ndarray:
    """``transform(acts) @ weights`` for every stimulus: [N, K] (one pass)."""
    w = np.asarray(weights, dtype=np.float64)
    out = np.full((source.n_rows, w.shape[1]), np.nan)
    for rows, acts in source.batches():
        out[rows] = _apply(acts, transform).astype(np.float64) @ w
    return out


# ---------------------------------------------------------------------- statistics
def merge_splits(stats: SufficientStats) -> SufficientStats:
    """Per-condition statistics (both splits) from per-(condition, split) statistics."""
    n, mean, m2 = chan_merge(
        stats.count[0::2, None],
        stats.mean[0::2],
        stats.m2[0::2],
        stats.count[1::2, None],
        stats.mean[1::2],
        stats.m2[1::2],
    )
    return SufficientStats.from_arrays(n[:, 0], mean, m2)


def split_stats(stats: SufficientStats, split: int) -> SufficientStats:
    """Per-condition statistics of one split (0 = even, 1 = odd)."""
    return SufficientStats.from_arrays(
        stats.count[split::2], stats.mean[split::2], stats.m2[split::2]
    )


def category_maps(
    stats: SufficientStats,
    category_ids: Sequence[int],
    reference: str,
    baseline_id: int | None = None,
    pvalues: bool = True,
) -> Any:
    """t, df, p, d [K, U] of the listed conditions against their rest or the baseline."""
    from topocli.stats.contrasts import category_vs_baseline, category_vs_rest

    ids = np.asarray(category_ids, dtype=np.int64)
    if reference == "rest":
        res = category_vs_rest(stats, "greater", pvalues)
        return type(res)(*(a[ids] for a in res))
    if baseline_id is None:
        raise ValueError("a baseline reference needs baseline_id")
    return category_vs_baseline(stats, ids, [baseline_id], "greater", pvalues)


def _significance(t: np.ndarray, p: np.ndarray, sheet: Sheet, opts: ScreenOptions) -> tuple:
    from topocli.stats.contrasts import bh_fdr

    q = bh_fdr(p, sheet.area if opts.fdr_scope == "area" else None)
    with np.errstate(invalid="ignore"):
        sig = np.isfinite(t) & np.isfinite(q) & (q < opts.q) & (t > 0)
    return q, sig


def _clusters(t: np.ndarray, sig: np.ndarray, sheet: Sheet, opts: ScreenOptions) -> tuple:
    from topocli.stats.clusters import find_clusters, island_morans_i

    labels, table = find_clusters(t, sig, sheet, opts.connectivity, opts.min_cluster, True)
    if len(table):
        islands = island_morans_i(
            sheet.to_grid(t),
            sheet.to_grid(labels, fill=0),
            opts.permutations,
            opts.seed,
            opts.min_cluster,
        )
        table = table.merge(
            islands.table[["cluster", "moran_i", "moran_p"]], on="cluster", how="left"
        )
        return labels, table, islands.mean_i
    table = table.assign(moran_i=pd.Series(dtype=float), moran_p=pd.Series(dtype=float))
    return labels, table, float("nan")


def analyse_categories(
    stats: SufficientStats,
    conditions: Sequence[str],
    categories: Sequence[str],
    sheet: Sheet,
    opts: ScreenOptions,
    reference: str = "rest",
    baseline: str | None = None,
) -> tuple[list[CategoryResult], pd.DataFrame]:
    """Every category's maps, clusters, Moran's I and split-half profile from the statistics.

    Parameters
    ----------
    stats : SufficientStats
        Groups ``2 * condition + split`` over ``conditions``.
    categories : sequence of str
        The conditions to screen (the others only serve as rest / baseline / profile columns).
    reference : {"rest", "baseline"}
        Against the union of all other conditions, or against ``baseline`` alone. With
        ``reference="rest"`` and a ``baseline`` condition, each category is also tested against
        the baseline alone (``vs_baseline``).
    """
    conditions = list(conditions)
    ids = [conditions.index(c) for c in categories]
    base_id = conditions.index(baseline) if baseline is not None else None
    merged = merge_splits(stats)
    maps = category_maps(merged, ids, reference, base_id)
    t_split = np.stack(
        [category_maps(split_stats(stats, s), ids, reference, base_id, False).t for s in (0, 1)],
        axis=1,
    )
    extra = None
    if reference == "rest" and base_id is not None:
        extra = category_maps(merged, ids, "baseline", base_id)
    n_cond = len(conditions)
    n_s = stats.count.reshape(n_cond, 2)
    mean_s = stats.mean.reshape(n_cond, 2, stats.n_units)
    var_s = stats.variance().reshape(n_cond, 2, stats.n_units)
    profiles, responses = category_profiles(
        t_split, list(categories), n_s, mean_s, var_s, conditions, opts.top_percent
    )
    results = []
    for k, name in enumerate(categories):
        q, sig = _significance(maps.t[k], maps.p[k], sheet, opts)
        labels, table, moran = _clusters(maps.t[k], sig, sheet, opts)
        vs_base = None
        if extra is not None:
            qb, sigb = _significance(extra.t[k], extra.p[k], sheet, opts)
            vs_base = {"t": extra.t[k], "q": qb, "significant": sigb}
        own = ids[k]
        others = np.delete(responses[k], own)
        effect = float(responses[k, own] - np.nanmean(others)) if others.size else float("nan")
        results.append(
            CategoryResult(
                name=name,
                n_stimuli=int(merged.count[own]),
                reference=baseline if reference == "baseline" else "rest",
                t=maps.t[k],
                df=maps.df[k],
                p=maps.p[k],
                q=q,
                d=maps.d[k],
                significant=sig,
                labels=labels,
                clusters=table,
                moran_mean=moran,
                t_split=t_split[k],
                vs_baseline=vs_base,
                heldout_effect=effect,
            )
        )
    return results, profiles


def category_profiles(
    t_split: np.ndarray,
    names: Sequence[str],
    n: np.ndarray,
    mean: np.ndarray,
    var: np.ndarray,
    conditions: Sequence[str],
    top_percent: float = 10.0,
) -> tuple[pd.DataFrame, np.ndarray]:
    """Split-half fROI profiles of K categories over the whole sheet, vectorised over conditions.

    The same table as :func:`topocli.stats.froi.froi_profiles` (``areas="sheet"``) called once per
    category, without its Python loop over conditions (K categories x C conditions).

    Parameters
    ----------
    t_split : ndarray [K, 2, U]
        Each category's t map on the even and the odd half.
    names : K category names (the fROIs' contrasts).
    n, mean, var : ndarray [C, 2], [C, 2, U], [C, 2, U]
        Per-(condition, split) moments.

    Returns
    -------
    table : DataFrame
        Columns of :data:`topocli.stats.froi.PROFILE_COLUMNS`.
    responses : ndarray [K, C]
        The ``mean`` direction's responses (average of the two held-out halves).
    """
    from topocli.stats.froi import DIRECTIONS, PROFILE_COLUMNS, WHOLE_SHEET, top_percent_mask

    n = np.asarray(n, dtype=np.float64)
    sd = np.sqrt(np.clip(var, 0.0, None))
    everywhere = np.ones(mean.shape[-1], dtype=bool)
    n_cond = len(conditions)
    frames, responses = [], np.full((len(names), n_cond), np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        root_n = np.sqrt(n)
        for k, name in enumerate(names):
            m_even = top_percent_mask(t_split[k, 0], everywhere, top_percent)
            m_odd = top_percent_mask(t_split[k, 1], everywhere, top_percent)
            parts = []
            for measure, mask in ((1, m_even), (0, m_odd)):  # define on one half, read the other
                size = int(mask.sum())
                if size:
                    r = mean[:, measure, mask].mean(axis=1)
                    sem = sd[:, measure, mask].mean(axis=1) / root_n[:, measure]
                    sem = np.where(n[:, measure] > 0, sem, np.nan)
                else:
                    r = sem = np.full(n_cond, np.nan)
                parts.append((r, sem, size))
            (r1, s1, k1), (r2, s2, k2) = parts
            r_mean = (r1 + r2) / 2.0
            responses[k] = r_mean
            resp = np.stack([r1, r2, r_mean], axis=1)
            sems = np.stack([s1, s2, np.sqrt(s1**2 + s2**2) / 2.0], axis=1)
            sizes = np.array([k1, k2, int(round((k1 + k2) / 2.0))])
            stims = np.stack([n[:, 1], n[:, 0], n[:, 0] + n[:, 1]], axis=1)
            frames.append(
                pd.DataFrame(
                    {
                        "froi": f"{name}@{WHOLE_SHEET}",
                        "contrast": name,
                        "area": WHOLE_SHEET,
                        "condition": np.repeat(np.asarray(conditions, dtype=object), 3),
                        "split_direction": np.tile(np.asarray(DIRECTIONS, dtype=object), n_cond),
                        "response_mean": resp.reshape(-1),
                        "response_sem": sems.reshape(-1),
                        "n_units": np.tile(sizes, n_cond),
                        "n_stimuli": stims.reshape(-1).astype(np.int64),
                    }
                )
            )
    if not frames:
        return pd.DataFrame(columns=PROFILE_COLUMNS), responses
    return pd.concat(frames, ignore_index=True)[PROFILE_COLUMNS], responses


# ---------------------------------------------------------------------- known localizers
def _known_stimuli(name: str, stack: ExitStack) -> tuple[StimulusSet, dict[str, float], str]:
    """A known localizer's stimuli (only the conditions its contrast uses) and contrast."""
    spec = None
    try:
        from topocli.workflows.localize.run import resolve_contrasts, resolve_localizer

        spec = resolve_localizer(name)
        stim_set = spec.stimulus_set(stack)
        contrasts = resolve_contrasts(spec, None, stim_set.conditions)
        cname, weights = next(iter(contrasts.items()))
    except Exception:  # the localizer library is optional here: fall back to the shipped folders
        spec = None
    if spec is None:
        from topocli.stimuli.stimulus_set import load_condition_folders

        folders, weights, cname = _FALLBACK_KNOWN[name]
        root = localizers_root()
        stim_set = load_condition_folders({c: root / f for c, f in folders.items()}, root)
    used = [c for c in stim_set.conditions if weights.get(c, 0.0) != 0.0]
    return stim_set.subset(used), dict(weights), str(cname)


def _known_cache_file(model: Any, stim_set: StimulusSet, weights: dict, opts: ScreenOptions):
    from topocli.activations.extraction import activation_cache_dir, cache_key

    payload = json.dumps(
        {
            "activations": cache_key(model, stim_set, opts.pooling),
            "weights": weights,
            "q": float(opts.q),
            "fdr_scope": opts.fdr_scope,
            "fwhm_mm": float(opts.fwhm_mm),
            "across_areas": bool(opts.across_areas),
            "version": KNOWN_CACHE_VERSION,
        },
        sort_keys=True,
    )
    key = hashlib.sha256(payload.encode()).hexdigest()
    return activation_cache_dir() / "screen-known" / f"{key}.safetensors"


def builtin_known_maps(
    model: Any,
    opts: ScreenOptions,
    names: Sequence[str] = BUILTIN_KNOWN,
    progress: Any = None,
) -> tuple[list[KnownMap], list[str]]:
    """Run the shipped language / ToM / MD localizers on ``model`` (cached); maps and notes."""
    from safetensors.numpy import load_file, save_file

    from topocli.workflows.localize.run import localize

    known, notes = [], []
    mods = getattr(model, "modalities", {"text"})
    if "text" not in mods:
        notes.append(
            "The built-in known localizers (language, ToM, MD) are text localizers and this "
            "model takes no text: novelty is measured against --known folders only."
        )
        return known, notes
    for name in names:
        with ExitStack() as stack:
            stim_set, weights, cname = _known_stimuli(name, stack)
            cache_file = (
                _known_cache_file(model, stim_set, weights, opts) if opts.use_cache else None
            )
            if cache_file is not None and cache_file.is_file():
                arrays = load_file(str(cache_file))
                sig, t = arrays["significant"].astype(bool), arrays["t"].astype(np.float64)
            else:
                res = localize(
                    model,
                    stim_set,
                    {cname: weights},
                    fwhm_mm=opts.fwhm_mm,
                    across_areas=opts.across_areas,
                    q=opts.q,
                    fdr_scope=opts.fdr_scope,
                    froi_areas="sheet",
                    min_cluster=opts.min_cluster,
                    connectivity=opts.connectivity,
                    permutations=0,
                    seed=opts.seed,
                    batch_size=opts.batch_size,
                    use_cache=opts.use_cache,
                    progress=progress,
                    pooling=opts.pooling,
                )
                c = res.contrasts[0]
                sig, t = np.asarray(c.significant, bool), np.asarray(c.t, np.float64)
                if cache_file is not None:
                    cache_file.parent.mkdir(parents=True, exist_ok=True)
                    tmp = cache_file.with_name(f".{cache_file.name}.{uuid.uuid4().hex}")
                    save_file({"significant": sig.astype(np.uint8), "t": t}, str(tmp))
                    os.replace(tmp, cache_file)
        known.append(KnownMap(name, "built-in localizer, shipped stimuli", sig, t, cname))
    return known, notes


def _identity_core(identity: Mapping[str, Any] | None) -> dict[str, Any]:
    keys = ("weights_sha256", "mode", "areas", "sheet", "adaptor_sha256")
    return {k: (identity or {}).get(k) for k in keys}


def read_known_folder(folder: str | Path, model: Any, sheet: Sheet) -> list[KnownMap]:
    """Significance maps of a ``topo localize`` results folder made on the same model.

    The folder's ``manifest.json`` must record a model identity equal to ``model``'s (base
    weights hash, mode, recorded areas, sheet, adaptor weights hash); ``units.csv`` gives one
    map per contrast (column ``contrast`` or ``category``) from its ``significant`` column.
    """
    from topocli.models.checkpoint import model_identity
    from topocli.reporting.results import read_manifest

    folder = Path(folder)
    manifest = read_manifest(folder)
    theirs = (manifest.get("extra") or {}).get("model")
    if not theirs:
        raise TopoInputError(
            "its manifest.json records no model, so it cannot be checked against this one",
            folder,
        )
    ours = model_identity(model)
    a, b = _identity_core(theirs), _identity_core(ours)
    diff = [k for k in a if a[k] != b[k]]
    if diff:
        who = theirs.get("name") or theirs.get("checkpoint") or theirs.get("base_model")
        raise TopoInputError(
            f"made with another model ({who}; {', '.join(diff)} differ); localize it again on "
            "this model",
            folder,
        )
    units = folder / "units.csv"
    if not units.is_file():
        raise TopoInputError("has no units.csv; is it a topo localize results folder?", folder)
    df = pd.read_csv(units)
    col = "contrast" if "contrast" in df.columns else "category" if "category" in df else None
    if col is None or not {"unit", "significant"} <= set(df.columns):
        raise TopoInputError("units.csv needs columns contrast, unit and significant", units)
    if "reference" in df.columns:  # a screen folder: the primary maps only
        df = df[df["reference"] != BASELINE]
    out = []
    for name, sub in df.groupby(col, sort=False):
        sub = sub.sort_values("unit")
        if len(sub) != sheet.n_units or not np.array_equal(sub["unit"], np.arange(sheet.n_units)):
            raise TopoInputError(
                f"{name!r} has {len(sub)} units, this model's sheet has {sheet.n_units}", units
            )
        sig = sub["significant"].astype(str).str.lower().isin(["true", "1"]).to_numpy()
        t = sub["t"].to_numpy(dtype=np.float64) if "t" in sub else None
        label = manifest.get("extra", {}).get("localizer") or folder.name
        out.append(KnownMap(f"{label}: {name}", str(folder), sig, t, str(name)))
    return out


# ---------------------------------------------------------------------- novelty and rank
def score_novelty(results: Sequence[CategoryResult], known: Sequence[KnownMap]) -> pd.DataFrame:
    """Fill best match, max Dice and novelty of every category; the Dice table (long)."""
    from topocli.stats.froi import dice

    rows = []
    for r in results:
        values = []
        for k in known:
            d = dice(r.significant, k.significant) if r.n_significant else float("nan")
            d = 0.0 if r.n_significant and not np.isfinite(d) else d
            values.append(d)
            rows.append({"category": r.name, "known": k.name, "dice": d})
        if r.n_significant and values:
            best = int(np.argmax(values))
            r.best_known, r.max_dice = known[best].name, float(values[best])
            r.novelty = 1.0 - r.max_dice
        else:
            r.best_known, r.max_dice, r.novelty = "", float("nan"), float("nan")
    return pd.DataFrame(rows, columns=["category", "known", "dice"])


def rank_categories(results: list[CategoryResult], rank_by: str = "units") -> list[CategoryResult]:
    """Sort by the documented score (see the module docstring) and set ``rank`` (1 = top)."""

    def neg(x: float) -> float:
        return -x if np.isfinite(x) else math.inf

    def key(r: CategoryResult) -> tuple:
        if rank_by == "peak-t":
            return (neg(r.peak_t), neg(r.novelty), -r.n_significant, r.name)
        return (-r.n_significant, neg(r.novelty), neg(r.peak_t), r.name)

    ordered = sorted(results, key=key)
    for i, r in enumerate(ordered, start=1):
        r.rank = i
    return ordered


# ---------------------------------------------------------------------- exemplars
def exemplar_mask(r: CategoryResult) -> tuple[np.ndarray, str]:
    """Units whose mean response picks the exemplars: largest cluster, else significant, else
    the top 1 % by t."""
    if r.n_clusters:
        mask = r.labels == 1  # clusters are numbered by decreasing size
        return mask, f"largest cluster ({int(mask.sum())} units)"
    if r.n_significant:
        return r.significant.copy(), f"significant units ({r.n_significant})"
    t = np.where(np.isfinite(r.t), r.t, -np.inf)
    k = max(1, int(math.ceil(0.01 * t.size)))
    mask = np.zeros(t.size, dtype=bool)
    mask[np.argsort(-t, kind="stable")[:k]] = True
    return mask, f"top 1% units by t ({k}; nothing significant)"


def pick_exemplars(
    source: ActivationSource,
    stim_set: StimulusSet,
    results: Sequence[CategoryResult],
    n_exemplars: int,
    transform: Any = None,
) -> pd.DataFrame:
    """Each category's stimuli with the highest mean response in its exemplar units."""
    if not results:
        return pd.DataFrame(columns=EXEMPLAR_COLUMNS)
    masks = [exemplar_mask(r) for r in results]
    w = np.stack([m / max(1, m.sum()) for m, _ in masks], axis=1)
    scores = project(source, w, transform)
    cond = stim_set.condition_index()
    rows = []
    for k, r in enumerate(results):
        ci = stim_set.conditions.index(r.name)
        members = np.flatnonzero(cond == ci)
        order = members[np.argsort(-scores[members, k], kind="stable")][: int(n_exemplars)]
        r.exemplar_rows = [int(i) for i in order]
        r.exemplar_scores = [float(scores[i, k]) for i in order]
        r.exemplar_units = masks[k][1]
        for j, i in enumerate(order, start=1):
            s = stim_set.stimuli[i]
            rows.append(
                {
                    "category": r.name,
                    "exemplar": j,
                    "stimulus": s.text if s.text is not None else s.label,
                    "id": s.id,
                    "response": float(scores[i, k]),
                    "units": masks[k][1],
                }
            )
    return pd.DataFrame(rows, columns=EXEMPLAR_COLUMNS)


# ---------------------------------------------------------------------- discovery
def selectivity_scores(
    t: np.ndarray, p: np.ndarray, region: np.ndarray, q: float = 0.05
) -> np.ndarray:
    """Sheet selectivity score per row: median t over the row's significant units in ``region``.

    Significant: BH-FDR over the region's units ``< q`` and ``t > 0``. A row with no significant
    unit scores its peak t in the region (below the t of any significant unit); a row with no
    finite t scores ``-inf``.
    """
    from topocli.stats.contrasts import bh_fdr

    t = np.atleast_2d(np.asarray(t, dtype=np.float64))
    p = np.atleast_2d(np.asarray(p, dtype=np.float64))
    out = np.full(t.shape[0], -np.inf)
    for i in range(t.shape[0]):
        tv, pv = t[i, region], p[i, region]
        finite = np.isfinite(tv) & np.isfinite(pv)
        if not finite.any():
            continue
        qv = bh_fdr(np.where(finite, pv, np.nan))
        with np.errstate(invalid="ignore"):
            sig = finite & (qv < q) & (tv > 0)
        out[i] = float(np.median(tv[sig])) if sig.any() else float(tv[finite].max())
    return out


def discover_clusters(
    embeddings: np.ndarray,
    source: ActivationSource,
    min_size: int,
    max_size: int | None = None,
    region: np.ndarray | None = None,
    q: float = 0.05,
    transform: Any = None,
    normalize: bool = True,
) -> Discovery:
    """Walk a Ward tree of the embeddings top-down while the sheet selectivity score improves.

    Parameters
    ----------
    embeddings : ndarray [N, D]
        One vector per pool stimulus (rows in the source's order).
    source : ActivationSource
        The pool's per-stimulus sheet activations.
    min_size, max_size : int
        Kept clusters hold ``min_size..max_size`` stimuli (``max_size`` None: half the pool).
    region : ndarray of bool [U], optional
        Units the score looks at (default: the whole sheet).
    q : float
        FDR threshold of the score's significant units (:func:`selectivity_scores`).
    normalize : bool
        L2-normalise the embeddings first (Ward on cosine geometry).

    Returns
    -------
    Discovery
        ``labels`` [N] (index into ``names``, -1 = unassigned), names ``discovered_01..`` by
        decreasing score, the walk's log, the linkage matrix.
    """
    from scipy.cluster.hierarchy import linkage, to_tree

    from topocli.stats.contrasts import category_vs_rest

    emb = np.asarray(embeddings, dtype=np.float64)
    n = emb.shape[0]
    if n != source.n_rows:
        raise ValueError(f"{n} embeddings for {source.n_rows} stimuli")
    if n < 2 * min_size:
        raise TopoInputError(
            f"the pool has {n} stimuli: too few to find two clusters of --min-size {min_size}"
        )
    max_size = n // 2 if max_size is None else int(max_size)
    if normalize:
        emb = emb / np.clip(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12, None)
    z = linkage(emb, method="ward")
    root = to_tree(z)
    region = np.ones(source.n_units, bool) if region is None else np.asarray(region, bool)
    scores: dict[int, float] = {root.id: -np.inf}
    parent_of: dict[int, int] = {}
    log: list[dict[str, Any]] = []
    kept: list[Any] = []
    to_decide, level = [root], 0
    while to_decide:
        kids = [
            c
            for node in to_decide
            if not node.is_leaf()
            for c in (node.get_left(), node.get_right())
            if c.get_count() >= min_size
        ]
        for node in to_decide:  # ClusterNode's == compares heights: use ids
            if not node.is_leaf():
                parent_of[node.get_left().id] = node.id
                parent_of[node.get_right().id] = node.id
        if kids:
            member = np.full(n, len(kids), dtype=np.int64)
            for j, c in enumerate(kids):
                member[c.pre_order()] = j
            st = grouped_stats(source, member, len(kids) + 1, transform)
            res = category_vs_rest(st, "greater")
            sc = selectivity_scores(res.t[: len(kids)], res.p[: len(kids)], region, q)
            for c, s in zip(kids, sc, strict=True):
                scores[c.id] = float(s) if np.isfinite(s) else -np.inf
        next_decide = []
        for node in to_decide:
            children = [] if node.is_leaf() else [node.get_left(), node.get_right()]
            eligible = [c for c in children if c.get_count() >= min_size]
            best = max((scores[c.id] for c in eligible), default=-np.inf)
            if node is root:
                decision = "split (root)"
            elif node.get_count() > max_size:
                decision = "split (larger than --max-size)"
            elif eligible and best > scores[node.id]:
                decision = "split (a child scores higher)"
            else:
                decision = "kept"
            log.append(
                {
                    "node": node.id,
                    "parent": parent_of.get(node.id, -1),
                    "level": level,
                    "n_stimuli": node.get_count(),
                    "score": scores[node.id],
                    "best_child_score": best,
                    "decision": decision,
                }
            )
            if decision == "kept":
                kept.append(node)
                continue
            for c in children:
                if c.get_count() >= min_size:
                    next_decide.append(c)
                else:
                    log.append(
                        {
                            "node": c.id,
                            "parent": node.id,
                            "level": level + 1,
                            "n_stimuli": c.get_count(),
                            "score": float("nan"),
                            "best_child_score": float("nan"),
                            "decision": "dropped (smaller than --min-size)",
                        }
                    )
        to_decide, level = next_decide, level + 1
    kept.sort(key=lambda c: (-scores[c.id], c.id))
    width = max(2, len(str(len(kept))))
    names = [f"discovered_{i:0{width}d}" for i in range(1, len(kept) + 1)]
    labels = np.full(n, -1, dtype=np.int64)
    for j, c in enumerate(kept):
        labels[c.pre_order()] = j
    table = pd.DataFrame(log)
    for col in ("score", "best_child_score"):
        table[col] = table[col].replace([np.inf, -np.inf], np.nan)
    cluster_of = {c.id: nm for c, nm in zip(kept, names, strict=True)}
    table["cluster"] = table["node"].map(cluster_of).fillna("")
    return Discovery(
        labels=labels,
        names=names,
        scores=[scores[c.id] for c in kept],
        log=table[DISCOVERY_COLUMNS],
        linkage=z,
        kept_nodes=[int(c.id) for c in kept],
    )


# ---------------------------------------------------------------------- the screens
def _finish(
    stats: SufficientStats,
    stim_set: StimulusSet,
    categories: Sequence[str],
    sheet: Sheet,
    opts: ScreenOptions,
    reference: str,
    baseline: str | None,
    source: ActivationSource,
    transform: Any,
    known: Sequence[KnownMap],
) -> tuple[list[CategoryResult], pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    results, profiles = analyse_categories(
        stats, stim_set.conditions, categories, sheet, opts, reference, baseline
    )
    dice_table = score_novelty(results, known)
    results = rank_categories(results, opts.rank_by)
    exemplars = pick_exemplars(source, stim_set, results, opts.n_exemplars, transform)
    return results, profiles, dice_table, exemplars


def screen(
    model: Any,
    categories: StimulusSet,
    baseline: StimulusSet | None = None,
    opts: ScreenOptions | None = None,
    known: Sequence[KnownMap] = (),
    progress: Any = None,
) -> ScreenResult:
    """Screen category sets in one extraction pass.

    Parameters
    ----------
    model : TopoModel
    categories : StimulusSet
        One condition per category (at least 4 stimuli each). With one category, ``baseline``
        is required and is the reference; with several, each is tested against the others (and
        the baseline, when given, joins the rest and is reported on its own too).
    baseline : StimulusSet, optional
    opts : ScreenOptions
    known : sequence of KnownMap
        Known localizer maps for the novelty score.
    """
    from topocli.workflows.localize.run import smoothing_transform

    opts = opts or ScreenOptions()
    opts.check()
    check_categories(categories)
    names = list(categories.conditions)
    if len(names) == 1 and baseline is None:
        raise TopoInputError(
            f"one category ({names[0]!r}) needs a baseline pool to be tested against",
            categories.root,
        )
    base_name = None
    combined = categories
    if baseline is not None:
        check_not_in_baseline(categories, baseline)
        if len(baseline) < MIN_STIMULI:
            raise TopoInputError(
                f"the baseline pool has {len(baseline)} stimuli; need at least {MIN_STIMULI}",
                baseline.root,
            )
        combined, base_name = with_baseline_group(categories, baseline)
    check_modality(model, combined)
    sheet: Sheet = model.sheet
    transform = smoothing_transform(sheet, float(opts.fwhm_mm), opts.across_areas)
    col = collect_activations(
        model,
        combined,
        opts.batch_size,
        opts.pooling,
        transform,
        opts.use_cache,
        progress=progress,
        memory_bytes=opts.memory_bytes,
    )
    try:
        reference = "baseline" if len(names) == 1 else "rest"
        results, profiles, dice_table, exemplars = _finish(
            col.stats,
            combined,
            names,
            sheet,
            opts,
            reference,
            base_name,
            col.source,
            transform,
            known,
        )
    finally:
        col.source.close()
    mode = "single" if len(names) == 1 else "categories"
    params = {**opts.as_dict(), "reference": reference, "baseline": base_name}
    return ScreenResult(
        sheet=sheet,
        stim_set=combined,
        conditions=list(combined.conditions),
        categories=results,
        profiles=profiles,
        stats=col.stats,
        known=list(known),
        dice=dice_table,
        params=params,
        mode=mode,
        cache_key=col.cache_key,
        from_cache=col.from_cache,
        exemplars=exemplars,
    )


def discover_screen(
    model: Any,
    pool: StimulusSet,
    opts: ScreenOptions | None = None,
    known: Sequence[KnownMap] = (),
    progress: Any = None,
    embeddings: np.ndarray | None = None,
) -> ScreenResult:
    """Find categories in an unlabeled pool and screen them (see the module docstring).

    ``embeddings`` replaces the model's final representations (e.g. precomputed ones).
    """
    from topocli.workflows.localize.run import smoothing_transform

    opts = opts or ScreenOptions()
    opts.check()
    if len(pool) == 0:
        raise TopoInputError("the discovery pool is empty", pool.root)
    check_modality(model, pool)
    sheet: Sheet = model.sheet
    region = None
    if opts.area is not None:
        region = sheet.area == sheet.area_index(opts.area)
    transform = smoothing_transform(sheet, float(opts.fwhm_mm), opts.across_areas)
    col = collect_activations(
        model,
        pool,
        opts.batch_size,
        opts.pooling,
        transform,
        opts.use_cache,
        with_final=embeddings is None,
        progress=progress,
        memory_bytes=opts.memory_bytes,
    )
    try:
        emb = embeddings if embeddings is not None else col.final
        if emb is None:
            raise TopoInputError("this model gives no final representation to embed the pool")
        disc = discover_clusters(
            emb, col.source, opts.min_size, opts.max_size, region, opts.q, transform
        )
        if not disc.names:
            raise TopoInputError(
                f"no cluster of {opts.min_size}..{opts.max_size or len(pool) // 2} stimuli "
                "beats its parent in this pool; try a smaller --min-size",
                pool.root,
            )
        cond_names = [disc.names[i] if i >= 0 else UNASSIGNED for i in disc.labels]
        order = [*disc.names, *([UNASSIGNED] if (disc.labels < 0).any() else [])]
        labelled = StimulusSet(Path(pool.root), relabel(pool.stimuli, cond_names), order)
        stats = grouped_stats(col.source, labelled.group_index(), labelled.n_groups, transform)
        results, profiles, dice_table, exemplars = _finish(
            stats, labelled, disc.names, sheet, opts, "rest", None, col.source, transform, known
        )
    finally:
        col.source.close()
    params = {**opts.as_dict(), "reference": "rest of the pool", "baseline": None}
    res = ScreenResult(
        sheet=sheet,
        stim_set=labelled,
        conditions=order,
        categories=results,
        profiles=profiles,
        stats=stats,
        known=list(known),
        dice=dice_table,
        params=params,
        mode="discover",
        discovery=disc,
        cache_key=col.cache_key,
        from_cache=col.from_cache,
        exemplars=exemplars,
    )
    res.notes.append(
        "Discovered clusters were chosen with the same sheet responses that are then tested, so "
        "their t, q and significant units are optimistic (circular). The held-out effect is "
        "split-half cross-validated; confirm a discovery on new stimuli with topo screen "
        "--stimuli."
    )
    return res


# ---------------------------------------------------------------------- tables
def units_table(result: ScreenResult) -> pd.DataFrame:
    """``units.csv`` (long): one row per (category, reference, unit)."""
    sheet = result.sheet
    area = np.asarray(sheet.area_names, dtype=object)[sheet.area]
    frames = []
    for c in result.categories:
        maps = [(c.reference, c.t, c.q, c.significant, c.labels)]
        if c.vs_baseline is not None:
            vb = c.vs_baseline
            maps.append((BASELINE, vb["t"], vb["q"], vb["significant"], None))
        for ref, t, q, sig, labels in maps:
            frames.append(
                pd.DataFrame(
                    {
                        "category": c.name,
                        "reference": ref,
                        "unit": np.arange(sheet.n_units),
                        "area": area,
                        "row": sheet.row,
                        "col": sheet.col,
                        "t": t,
                        "q": q,
                        "significant": sig,
                        "cluster": labels if labels is not None else 0,
                    }
                )
            )
    if not frames:
        return pd.DataFrame(columns=[*UNIT_COLUMNS, "cluster"])
    return pd.concat(frames, ignore_index=True)


def clusters_table(result: ScreenResult) -> pd.DataFrame:
    """``clusters.csv``: one row per (category, cluster)."""
    frames = [c.clusters.assign(category=c.name) for c in result.categories if c.n_clusters]
    if not frames:
        return pd.DataFrame(columns=CLUSTER_COLUMNS)
    return pd.concat(frames, ignore_index=True)[CLUSTER_COLUMNS]


def known_table(result: ScreenResult) -> pd.DataFrame:
    """``known.csv``: the known localizer maps novelty was measured against."""
    return pd.DataFrame(
        [
            {
                "known": k.name,
                "contrast": k.contrast,
                "source": k.source,
                "n_significant_units": k.n_significant,
            }
            for k in result.known
        ],
        columns=["known", "contrast", "source", "n_significant_units"],
    )


def assignments_table(result: ScreenResult) -> pd.DataFrame:
    """``assignments.csv`` (discovery): every pool stimulus and its discovered cluster."""
    return pd.DataFrame(
        {
            "stimulus": [s.text if s.text is not None else s.label for s in result.stim_set],
            "id": [s.id for s in result.stim_set],
            "cluster": [s.condition for s in result.stim_set],
        }
    )


def contrast_weights(result: ScreenResult) -> dict[str, dict[str, float]]:
    """Each category's test as condition weights: +1 on the category, -n_j / n_reference on
    each reference condition (the reference's mean is the count-weighted mean of its parts)."""
    counts = result.stim_set.counts()
    out = {}
    for c in result.categories:
        ref = [c.reference] if c.reference != "rest" else [x for x in counts if x != c.name]
        total = sum(counts[x] for x in ref)
        out[c.name] = {c.name: 1.0, **{x: -counts[x] / total for x in ref}}
    return out


# ---------------------------------------------------------------------- figures
def _display_limit(values: Iterable[np.ndarray]) -> float | None:
    finite = np.concatenate([np.abs(v[np.isfinite(v)]) for v in values] or [np.zeros(0)])
    if not finite.size:
        return None
    lim = float(np.percentile(finite, 99))
    return lim if lim > 0 else None


def _heatmap(
    matrix: np.ndarray,
    rows: Sequence[str],
    cols: Sequence[str],
    title: str,
    cbar: str,
    cmap: str = "viridis",
    vmin: float | None = None,
    vmax: float | None = None,
    boxes: Sequence[tuple[int, int]] = (),
    fmt: str = "{:.2f}",
) -> Any:
    from matplotlib.patches import Rectangle

    from topocli.reporting.plotting import new_figure

    m = np.asarray(matrix, dtype=np.float64)
    w = min(12.0, 2.6 + 0.55 * len(cols))
    h = min(12.0, 1.4 + 0.36 * len(rows))
    fig = new_figure((w, h))
    ax = fig.add_subplot()
    im = ax.imshow(np.ma.masked_invalid(m), cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto")
    ax.set_xticks(np.arange(len(cols)), [str(c) for c in cols], rotation=40, ha="right")
    ax.set_yticks(np.arange(len(rows)), [str(r) for r in rows])
    ax.tick_params(labelsize=8)
    if m.size <= 400:
        lo, hi = im.get_clim()
        for (i, j), v in np.ndenumerate(m):
            if np.isfinite(v):
                light = (
                    (v - lo) / (hi - lo + 1e-12) < 0.55
                    if cmap == "viridis"
                    else abs(v) > 0.6 * max(abs(lo), abs(hi))
                )
                ax.text(
                    j,
                    i,
                    fmt.format(v),
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if light else "black",
                )
    for i, j in boxes:
        ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, ec="black", lw=1.6))
    cb = fig.colorbar(im, ax=ax, shrink=0.85, pad=0.02)
    cb.set_label(cbar, fontsize=8)
    ax.set_title(title, fontsize=10)
    return fig


def profile_matrix(result: ScreenResult) -> tuple[np.ndarray, list[str], list[str]]:
    """Held-out fROI responses [categories in rank order, conditions] (mean of directions)."""
    rows = [c.name for c in result.categories[:REPORT_MAX_HEATMAP]]
    others = [c for c in result.conditions if c not in {x.name for x in result.categories}]
    cols = rows + others
    prof = result.profiles
    if prof.empty:
        return np.full((len(rows), len(cols)), np.nan), rows, cols
    mean = prof[prof["split_direction"] == "mean"]
    table = mean.pivot_table(
        index="contrast", columns="condition", values="response_mean", aggfunc="mean"
    )
    table = table.reindex(index=rows, columns=cols)
    return table.to_numpy(dtype=np.float64), rows, cols


def _row_z(m: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        mu = np.nanmean(m, axis=1, keepdims=True)
        sd = np.nanstd(m, axis=1, keepdims=True)
        return np.where(sd > 0, (m - mu) / sd, 0.0)


def plot_dendrogram(disc: Discovery, n_stimuli: int) -> Any:
    """The Ward tree (top 60 merges) with each kept cluster's branches in its colour."""
    from scipy.cluster.hierarchy import dendrogram

    from topocli.reporting.plotting import STREAM_COLORS, new_figure

    z = disc.linkage
    n = n_stimuli
    colour: dict[int, str] = {}
    for j, node in enumerate(disc.kept_nodes):
        c = STREAM_COLORS[j % len(STREAM_COLORS)]
        stack = [node]
        while stack:
            k = stack.pop()
            if k >= n:
                colour[k] = c
                stack.extend(int(v) for v in z[k - n, :2])

    fig = new_figure((9.0, 3.8))
    ax = fig.add_subplot()
    p = min(60, n)
    dendrogram(
        z,
        ax=ax,
        truncate_mode="lastp" if n > p else None,
        p=p,
        no_labels=True,
        link_color_func=lambda k: colour.get(int(k), "#9aa5b1"),
    )
    ax.set_ylabel("Ward distance", fontsize=8)
    ax.spines[["top", "right"]].set_visible(False)
    ax.set_title(
        f"Ward tree of the pool's final representations; coloured: the {len(disc.names)} kept "
        "clusters",
        fontsize=10,
    )
    return fig


# ---------------------------------------------------------------------- report
def _fmt(x: Any, spec: str = ".3g") -> str:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return str(x)
    return "—" if not np.isfinite(v) else format(v, spec)


def _exemplar_blocks(rep: Any, result: ScreenResult, c: CategoryResult) -> None:
    from topocli.stimuli.stimulus_set import load_image

    if not c.exemplar_rows:
        return
    stims = [result.stim_set.stimuli[i] for i in c.exemplar_rows]
    caption = (
        f"Exemplars: the {len(stims)} {c.name} stimuli with the highest mean response over the "
        f"{c.exemplar_units}."
    )
    modality = stims[0].modality
    if modality == "image":
        try:
            images = [
                (load_image(s.path), f"{s.label} ({_fmt(v, '.2f')})")
                for s, v in zip(stims, c.exemplar_scores, strict=True)
            ]
            rep.add_image_grid(images, caption=caption, thumb_px=128)
            return
        except TopoInputError:
            pass
    label = "stimulus" if modality == "text" else "file"
    table = pd.DataFrame(
        {
            "#": np.arange(1, len(stims) + 1),
            label: [s.text if s.text is not None else s.label for s in stims],
            "response": c.exemplar_scores,
        }
    )
    rep.add_table(table, caption, float_format="{:.3f}")


def _mode_text(result: ScreenResult) -> str:
    p = result.params
    if result.mode == "single":
        return "against the baseline pool"
    if result.mode == "discover":
        return "against the rest of the pool"
    if p.get("baseline"):
        return "against all the other categories plus the baseline pool"
    return "against all the other categories"


def build_report(result: ScreenResult, model_name: str | None, params: Mapping[str, Any]) -> Any:
    """The ``report.html`` of a screen: ranked table first, then maps, novelty, profiles."""
    from topocli.reporting.html import Report
    from topocli.reporting.plotting import plot_sheet_map, plot_sheet_maps

    sheet = result.sheet
    p = result.params
    cats = result.categories
    k = len(cats)
    what = "discovered clusters" if result.mode == "discover" else "categories"
    rep = Report(
        f"topo screen: {k} {what}",
        subtitle=f"model {model_name}" if model_name else None,
        command=params.get("command_line"),
    )
    top = cats[0] if cats else None
    novel = [c for c in cats if np.isfinite(c.novelty) and c.n_significant]
    if top is not None:
        lines = [
            f"Strongest territory: {top.name}, {top.n_significant} significant units in "
            f"{top.n_clusters} cluster{'s' if top.n_clusters != 1 else ''} (peak t "
            f"{_fmt(top.peak_t, '.2f')})."
        ]
        if novel:
            best = max(novel, key=lambda c: (c.novelty, c.n_significant))
            lines.append(
                f"Most novel: {best.name} (novelty {_fmt(best.novelty, '.2f')}; closest known "
                f"localizer {best.best_known or '—'})."
            )
        none = [c.name for c in cats if not c.n_significant]
        if none:
            lines.append(f"No significant unit: {', '.join(none)}.")
        rep.add_note(" ".join(lines))
    for note in result.notes:
        rep.add_note(note, "warning")

    order = (
        "has the highest peak t"
        if p["rank_by"] == "peak-t"
        else "has the most significant units (the largest selective territory)"
    )
    rep.add_section(
        "Ranked categories",
        f"Each of the {k} {what} was tested {_mode_text(result)} with a one-sided Welch t on every "
        f"unit of the sheet; units with BH-FDR q < {p['q']:g} and t > 0 are significant. Rank 1 "
        f"{order}; ties: higher novelty. Novelty = 1 − the highest Dice overlap "
        "with a known localizer's significant units. The held-out effect is split-half "
        "cross-validated: the category's fROI (top "
        f"{p['top_percent']:g}% units) is chosen on one half of the stimuli and measured on the "
        "other.",
    )
    table = result.category_table()
    shown = pd.DataFrame(
        {
            "rank": table["rank"],
            "category": table["category"],
            "stimuli": table["n_stimuli"],
            "sig. units": table["n_significant_units"],
            "clusters": table["n_clusters"],
            "peak t": table["peak_t"],
            "Moran's I": table["moran_i"],
            "held-out": table["heldout_effect"],
            "novelty": table["novelty"],
            "closest known": [
                f"{m} {_fmt(d, '.2f')}" if m else "—"
                for m, d in zip(table["best_known_match"], table["max_dice"], strict=True)
            ],
        }
    )
    if k and table["n_stimuli"].nunique() == 1:  # said in the caption instead
        shown = shown.drop(columns="stimuli")
    same_n = f"; {int(table['n_stimuli'].iloc[0])} stimuli each" if "stimuli" not in shown else ""
    rep.add_table(
        shown,
        f"Categories by rank (closest known: localizer and its Dice){same_n}",
        float_format="{:.2f}",
        csv_name="categories.csv",
    )
    if k:
        maps = cats[:36]
        lim = _display_limit([c.t for c in maps])
        clipped = [(np.clip(c.t, -lim, lim) if lim else c.t, f"#{c.rank} {c.name}") for c in maps]
        fig = plot_sheet_maps(
            clipped,
            sheet,
            ncols=min(6, len(maps)),
            shared_scale=True,
            outline_labels=[c.labels for c in maps],
            suptitle="t maps, one per category (rank order); outlined: significant clusters",
        )
        rep.add_figure(
            fig,
            f"All {what} at a glance on one colour scale (clipped at the 99th percentile of |t|, "
            f"{_fmt(lim)}). Red: the category responds more than its reference. Each panel is "
            "the whole sheet, areas as dashed boxes.",
        )

    rep.add_section(
        "Novelty against known localizers",
        "Dice overlap between each category's significant units and each known localizer's "
        "(run on the same model with the same threshold). A category that re-finds a known "
        "network scores a high Dice and a low novelty.",
    )
    if result.known and k:
        names = [kn.name for kn in result.known]
        top = [c.name for c in cats[:REPORT_MAX_HEATMAP]]
        m = result.dice.pivot(index="category", columns="known", values="dice")
        m = m.reindex(index=top, columns=names).to_numpy(dtype=np.float64)
        fig = _heatmap(
            m,
            top,
            names,
            "Dice with known localizers",
            "Dice",
            "viridis",
            0.0,
            max(0.2, float(np.nanmax(m)) if np.isfinite(m).any() else 1),
        )
        rep.add_figure(fig, "Rows in rank order; empty: the category has no significant unit.")
        kmaps = [
            (kn.t if kn.t is not None else kn.significant.astype(float), kn.name)
            for kn in result.known
        ]
        lim = _display_limit([v for v, _ in kmaps])
        fig = plot_sheet_maps(
            [(np.clip(v, -lim, lim) if lim else v, nm) for v, nm in kmaps],
            sheet,
            ncols=min(4, len(kmaps)),
            shared_scale=True,
            outline_labels=[kn.significant.astype(np.int32) for kn in result.known],
            suptitle="known localizers: t maps, significant units outlined",
        )
        rep.add_figure(fig, "The known localizer maps the novelty is measured against.")
        rep.add_table(known_table(result), "Known localizer maps", csv_name="known.csv")
    else:
        rep.add_note("No known localizer map was available: novelty is empty.", "warning")

    mat, rows, cols = profile_matrix(result)
    if k and np.isfinite(mat).any():
        rep.add_section(
            "Held-out response profiles",
            "Row: a category's fROI (its top units, chosen on one half of the stimuli). Column: "
            "the mean response to each condition on the other half. Values are z-scored within "
            "each row; a selective fROI lights up its own (boxed) column.",
        )
        z = _row_z(mat)
        lim = float(np.nanmax(np.abs(z))) if np.isfinite(z).any() else 1.0
        boxes = [(i, cols.index(r)) for i, r in enumerate(rows)]
        fig = _heatmap(
            z,
            rows,
            cols,
            "held-out fROI responses (z within row)",
            "z",
            "RdBu_r",
            -lim,
            lim,
            boxes,
            "{:.1f}",
        )
        rep.add_figure(
            fig, "Split-half cross-validated: selection and measurement never share stimuli."
        )

    shown_cats = cats[:REPORT_MAX_CATEGORIES]
    rep.add_section(
        "Categories one by one",
        "In rank order."
        + (
            f" The top {len(shown_cats)} of {k} are shown; every category's maps are in "
            "tmaps.nii.gz and units.csv."
            if k > len(shown_cats)
            else ""
        ),
    )
    for c in shown_cats:
        rep.add_subsection(f"#{c.rank} {c.name}")
        lim = _display_limit([c.t])
        fig = plot_sheet_map(
            c.t,
            sheet,
            title=f"{c.name} > {c.reference}: t; outlined: clusters (q < {p['q']:g})",
            outline_labels=c.labels,
            vmax=lim,
        )
        rep.add_figure(
            fig,
            f"{c.n_significant} significant units, {c.n_clusters} clusters of >= "
            f"{p['min_cluster']} units (numbered by size); colours clipped at {_fmt(lim)}.",
            dpi=120,
        )
        kv = {
            "stimuli": c.n_stimuli,
            "reference": c.reference,
            "significant units": f"{c.n_significant} of {sheet.n_units}",
            "clusters": c.n_clusters,
            "peak t": _fmt(c.peak_t, ".2f"),
            "mean t (significant units)": _fmt(c.mean_t, ".2f"),
            "island Moran's I (mean)": _fmt(c.moran_mean, ".3f"),
            "held-out effect": _fmt(c.heldout_effect, ".3g"),
            "closest known localizer": f"{c.best_known or '—'} (Dice {_fmt(c.max_dice, '.2f')})",
            "novelty": _fmt(c.novelty, ".2f"),
        }
        if c.vs_baseline is not None:
            kv["significant units vs baseline alone"] = int(c.vs_baseline["significant"].sum())
        rep.add_key_values(kv)
        _exemplar_blocks(rep, result, c)
        if c.n_clusters:
            rep.add_table(
                c.clusters[[col for col in CLUSTER_COLUMNS if col != "category"]],
                f"Clusters of {c.name}",
                max_rows=10,
                csv_name="clusters.csv",
            )

    if result.discovery is not None:
        disc = result.discovery
        rep.add_section(
            "Discovery",
            "The pool's stimuli were embedded with the model's final representation, clustered "
            "with Ward's method and the tree walked from the top: a node was split while one of "
            "its children had a higher sheet selectivity score (median t of the node against "
            "the rest of the pool over its significant units in "
            f"{p['area'] or 'the sheet'}) and kept otherwise, "
            f"keeping clusters of {p['min_size']} to {p['max_size'] or 'half the pool'} "
            "stimuli.",
        )
        rep.add_figure(plot_dendrogram(disc, len(result.stim_set)), "Kept clusters in colour.")
        n_un = int((disc.labels < 0).sum())
        if n_un:
            rep.add_note(f"{n_un} stimuli were left unassigned (in nodes below --min-size).")
        rep.add_table(disc.log, "The walk, node by node", max_rows=100, csv_name="discovery.csv")

    rep.add_section("Methods and settings")
    rep.add_key_values(
        {
            "model": model_name or "—",
            "reference": _mode_text(result),
            "stimuli": ", ".join(f"{c} {n}" for c, n in result.stim_set.counts().items()),
            "test": f"one-sided Welch t; BH-FDR over the "
            f"{'sheet' if p['fdr_scope'] == 'sheet' else 'units of each area'}, q < {p['q']:g}",
            "smoothing": "none" if not p["fwhm_mm"] else f"FWHM {p['fwhm_mm']:g} mm per stimulus",
            "clusters": f">= {p['min_cluster']} units, {p['connectivity']}-connectivity; island "
            f"Moran's I with {p['permutations']} permutations (seed {p['seed']})",
            "fROI": f"top {p['top_percent']:g}% units of the sheet, split-half",
            "rank": "by peak t" if p["rank_by"] == "peak-t" else "by significant units",
            "activations": f"{p['pooling']} pooling"
            + (" (from the activation cache)" if result.from_cache else ""),
        }
    )
    return rep


# ---------------------------------------------------------------------- writing
def write_screen_results(
    rf: Any, result: ScreenResult, model: Any, params: Mapping[str, Any]
) -> None:
    """Write the CSV tables, NIfTI maps, statistics, report and manifest of a screen."""
    from topocli.models.checkpoint import model_identity

    sheet = result.sheet
    names = [c.name for c in result.categories]
    rf.write_csv("categories.csv", result.category_table())
    rf.write_csv("clusters.csv", clusters_table(result))
    rf.write_csv("units.csv", units_table(result))
    rf.write_csv("profiles.csv", result.profiles)
    rf.write_csv("exemplars.csv", result.exemplars)
    rf.write_csv("dice.csv", result.dice)
    rf.write_csv("known.csv", known_table(result))
    if names:
        rf.write_sheet_nifti(
            "tmaps.nii.gz", np.stack([c.t for c in result.categories]), sheet, names
        )
        rf.write_sheet_nifti(
            "qmaps.nii.gz", np.stack([c.q for c in result.categories]), sheet, names
        )
    if result.known:
        rf.write_sheet_nifti(
            "known_maps.nii.gz",
            np.stack([k.significant.astype(np.float64) for k in result.known]),
            sheet,
            [k.name for k in result.known],
        )
    if result.discovery is not None:
        rf.write_csv("discovery.csv", result.discovery.log)
        rf.write_csv("assignments.csv", assignments_table(result))
    result.stats.save(
        rf.path("stats.safetensors"),
        {"conditions": json.dumps(result.conditions), "groups": "2*condition+split"},
    )
    identity = model_identity(model) if hasattr(model, "blocks") else None
    model_name = params.get("model") or (identity or {}).get("name")
    rf.write_report(build_report(result, model_name, params))
    inputs = {k: v for k, v in params.get("inputs", {}).items() if v}
    rf.write_manifest(
        "screen",
        {
            **result.params,
            **{k: v for k, v in params.items() if k not in ("command_line", "inputs")},
        },
        inputs,
        seed=result.params["seed"],
        extra={
            "model": identity,
            "mode": result.mode,
            "conditions": result.conditions,
            "counts": result.stim_set.counts(),
            "stats_groups": "2*condition+split",
            "contrasts": contrast_weights(result),
            "known": known_table(result).to_dict(orient="records"),
            "cache_key": result.cache_key,
            "from_cache": result.from_cache,
            "timings_s": params.get("timings_s"),
            "ranking": [
                {"rank": c.rank, "category": c.name, "n_significant_units": c.n_significant}
                for c in result.categories
            ],
        },
    )


# ---------------------------------------------------------------------- the command
def _safe(name: str) -> str:
    import re

    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "screen"


def run_screen(
    ctx: Any,
    stimuli: Path | None = None,
    against: Path | None = None,
    with_baseline: bool = False,
    discover: Path | None = None,
    known_dirs: Sequence[Path] = (),
    builtin_known: bool = True,
    opts: ScreenOptions | None = None,
    out_console: Any = None,
) -> Path:
    """``topo screen``: check the input, run the screen on ``ctx``'s model, write the folder."""
    import time

    from topocli.reporting.results import ResultsFolder, read_manifest
    from topocli.stimuli.stimulus_set import load_stimulus_set

    t0 = time.perf_counter()
    opts = opts or ScreenOptions()
    opts.check()
    if discover is not None and stimuli is not None:
        raise TopoInputError("give --stimuli or --discover, not both")
    if discover is not None and (against is not None or with_baseline):
        raise TopoInputError("--against / --with-baseline apply to --stimuli, not --discover")
    pool = categories = baseline = None
    if discover is not None:
        pool = load_pool(discover)
        if len(pool) < 2 * opts.min_size:
            raise TopoInputError(
                f"the pool has {len(pool)} stimuli: too few for two clusters of --min-size "
                f"{opts.min_size}",
                discover,
            )
        default_out = f"screen-discover-{_safe(Path(discover).name)}"
    else:
        categories = load_stimulus_set(stimuli) if stimuli else shipped_categories("text")
        check_categories(categories)
        if len(categories.conditions) == 1 or with_baseline or against is not None:
            baseline = (
                load_stimulus_set(against)
                if against is not None
                else shipped_baseline(categories.modality)
            )
            check_not_in_baseline(categories, baseline)
        default_out = f"screen-{_safe(Path(stimuli).name) if stimuli else 'categories'}"
    for folder in known_dirs:
        read_manifest(folder)  # a bad --known fails before the model runs
    out = Path(ctx.out) if ctx.out is not None else Path(default_out)
    timings: dict[str, float] = {}
    with ExitStack() as stack:
        rf = stack.enter_context(ResultsFolder(out, getattr(ctx, "overwrite", False)))
        model = ctx.load_model()
        hint = "; pass --stimuli with categories of a modality it takes" if not stimuli else ""
        check_modality(model, pool if pool is not None else categories, hint)
        t1 = time.perf_counter()
        timings["load_model"] = t1 - t0
        known: list[KnownMap] = []
        for folder in known_dirs:
            known.extend(read_known_folder(folder, model, model.sheet))
        notes: list[str] = []
        with ctx.progress() as progress:
            if builtin_known:
                maps, notes = builtin_known_maps(model, opts, progress=progress)
                known = maps + known
            t2 = time.perf_counter()
            timings["known_localizers"] = t2 - t1
            if pool is not None:
                result = discover_screen(model, pool, opts, known, progress)
            else:
                result = screen(model, categories, baseline, opts, known, progress)
        result.notes.extend(notes)
        t3 = time.perf_counter()
        timings["screen"] = t3 - t2
        inputs: dict[str, Any] = {
            "stimuli": str(stimuli) if stimuli else None,
            "against": str(against) if against else None,
            "discover": str(discover) if discover else None,
            "known": [str(k) for k in known_dirs] or None,
        }
        if categories is not None and not stimuli:
            inputs["stimuli"] = str(categories.root)
        if baseline is not None and against is None:
            inputs["against"] = str(baseline.root)
        params = {
            "model": ctx.model_spec,
            "stimuli": inputs["stimuli"],
            "against": inputs["against"],
            "discover": inputs["discover"],
            "known_folders": inputs["known"],
            "builtin_known": bool(builtin_known),
            "with_baseline": bool(with_baseline),
            "device": getattr(ctx, "device_name", None),
            "inputs": inputs,
            "timings_s": timings,
        }
        write_screen_results(rf, result, model, params)
        timings["write"] = time.perf_counter() - t3
    if not ctx.quiet and out_console is not None:
        print_summary(result, out_console)
        out_console.print(f"wrote {out} in {time.perf_counter() - t0:.1f} s")
    return out


def print_summary(result: ScreenResult, console: Any, max_rows: int = 20) -> None:
    """A rich table of the ranked categories."""
    from rich.table import Table

    p = result.params
    table = Table(
        title=f"{len(result.categories)} categor{'y' if len(result.categories) == 1 else 'ies'} "
        f"ranked; q < {p['q']:g}, clusters >= "
        f"{p['min_cluster']} units"
    )
    cols = (
        "rank",
        "category",
        "stimuli",
        "sig. units",
        "clusters",
        "peak t",
        "Moran's I",
        "closest known (Dice)",
        "novelty",
    )
    for col in cols:
        table.add_column(
            col, justify="left" if col in ("category", "closest known (Dice)") else "right"
        )
    for c in result.categories[:max_rows]:
        table.add_row(
            str(c.rank),
            c.name,
            str(c.n_stimuli),
            str(c.n_significant),
            str(c.n_clusters),
            _fmt(c.peak_t, ".2f"),
            _fmt(c.moran_mean, ".3f"),
            f"{c.best_known or '—'} ({_fmt(c.max_dice, '.2f')})",
            _fmt(c.novelty, ".2f"),
        )
    console.print(table)
    if len(result.categories) > max_rows:
        console.print(f"... {len(result.categories) - max_rows} more in categories.csv")
