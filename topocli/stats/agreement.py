"""Agreement metrics between model and human localizer results, each with its uncertainty.

* :func:`profile_agreement`: Pearson and Spearman r between two condition profiles, a
  permutation p (condition labels shuffled; exact enumeration when there are few conditions)
  and a bootstrap 95% CI (conditions resampled).
* :func:`selectivity_dprime`: target-vs-others selectivity of one profile.
* :func:`compare_moran_distributions`: island Moran's I of two sides (Welch t, Mann-Whitney U).
* :func:`dice`: overlap of two masks (split-half reliability of fROIs).
* :func:`load_condition_map` / :func:`validate_condition_map`: which model condition is which
  human condition and which model fROI (``contrast@area``) is which human fROI or category.
"""

from __future__ import annotations

import csv
import itertools
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from topocli.errors import TopoInputError

MIN_SHARED_CONDITIONS = 3


# --------------------------------------------------------------------------------------------
# Profile agreement
# --------------------------------------------------------------------------------------------


def profile_agreement(
    model_profile: pd.Series,
    human_profile: pd.Series,
    permutations: int = 10000,
    bootstrap: int = 10000,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict:
    """How well a model fROI's condition profile matches a human fROI's.

    Only conditions present (and finite) in both profiles are used, in the model profile's
    order. Three numbers per correlation (Pearson, and Spearman = Pearson of average ranks):

    * ``r``;
    * permutation p: the human values are shuffled over the condition labels and
      ``p = #{|r_perm| >= |r_obs|} / N``. When ``n! <= permutations`` all ``n!`` orderings
      (identity included) are enumerated and ``N = n!`` (exact); otherwise ``permutations``
      random orderings are drawn and ``p = (1 + #) / (permutations + 1)``. Two-sided.
    * bootstrap CI: conditions are resampled with replacement ``bootstrap`` times and the
      percentile interval of r is taken. A resample in which either side is constant (e.g. the
      same condition drawn ``n`` times) has no r and is skipped; ``n_bootstrap_valid`` says how
      many were used. With few conditions the resamples contain few distinct conditions, r is
      often +-1 and the CI is wide: read it as "the data cannot say more", not as a flaw.

    Parameters
    ----------
    model_profile, human_profile : pandas.Series
        Mean response per condition, indexed by condition name (already in the same naming:
        see :func:`apply_condition_map`).
    permutations : int, default=10000
        Random permutations when ``n! > permutations`` (0: no test, p is NaN).
    bootstrap : int, default=10000
        Bootstrap resamples (0: no CI, NaN).
    seed : int, default=0
        Seeds one generator used for the permutations, then the bootstrap.
    confidence : float, default=0.95

    Returns
    -------
    dict
        ``pearson_r, pearson_p_perm, pearson_ci_low, pearson_ci_high, spearman_r,
        spearman_p_perm, spearman_ci_low, spearman_ci_high, n_conditions, conditions,
        n_permutations, permutation_exact, n_bootstrap, n_bootstrap_valid, note``. When one
        profile is constant over the shared conditions r is undefined: the statistics are NaN
        and ``note`` says why.

    Raises
    ------
    TopoInputError
        Fewer than 3 shared conditions, or a profile with repeated condition names.
    """
    x, y, shared = _shared_values(model_profile, human_profile)
    n = len(shared)
    result: dict = {
        "n_conditions": n,
        "conditions": shared,
        "n_bootstrap": int(bootstrap),
        "note": "",
    }
    exact = math.factorial(n) <= permutations
    result["permutation_exact"] = exact
    result["n_permutations"] = math.factorial(n) if exact else int(permutations)
    if permutations < 0 or bootstrap < 0:
        raise TopoInputError("permutations and bootstrap must be >= 0")
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        side = "model" if np.ptp(x) == 0 else "human"
        for name in ("pearson", "spearman"):
            for key in ("r", "p_perm", "ci_low", "ci_high"):
                result[f"{name}_{key}"] = float("nan")
        result["n_bootstrap_valid"] = 0
        result["note"] = f"{side} profile is constant over the shared conditions: r undefined"
        return result
    rng = np.random.default_rng(seed)
    if exact:
        orders = np.array(list(itertools.permutations(range(n))), dtype=np.int64)
    else:
        orders = rng.permuted(np.tile(np.arange(n), (int(permutations), 1)), axis=1)
    resamples = rng.integers(0, n, size=(int(bootstrap), n))
    rank_x, rank_y = stats.rankdata(x), stats.rankdata(y)
    tail = (1.0 - confidence) / 2.0 * 100.0
    for name, (a, b) in (("pearson", (x, y)), ("spearman", (rank_x, rank_y))):
        observed = float(_rowwise_corr(a[None, :], b[None, :])[0])
        null = np.abs(_rowwise_corr(np.broadcast_to(a, orders.shape), b[orders]))
        hits = int(np.count_nonzero(null >= abs(observed) - 1e-12))
        p = hits / len(orders) if exact else (1 + hits) / (len(orders) + 1)
        p = p if len(orders) else float("nan")
        xb, yb = x[resamples], y[resamples]
        if name == "spearman":
            xb, yb = stats.rankdata(xb, axis=1), stats.rankdata(yb, axis=1)
        boot = _rowwise_corr(xb, yb)
        boot = boot[np.isfinite(boot)]
        low, high = np.percentile(boot, [tail, 100 - tail]) if boot.size else (np.nan, np.nan)
        result.update(
            {
                f"{name}_r": observed,
                f"{name}_p_perm": float(p),
                f"{name}_ci_low": float(low),
                f"{name}_ci_high": float(high),
            }
        )
        result["n_bootstrap_valid"] = int(boot.size)
    return result


def _shared_values(model: pd.Series, human: pd.Series) -> tuple[np.ndarray, np.ndarray, list]:
    for side, profile in (("model", model), ("human", human)):
        repeated = profile.index[profile.index.duplicated()].unique().tolist()
        if repeated:
            raise TopoInputError(f"{side} profile repeats conditions: {repeated}")
    shared = [c for c in model.index if c in human.index]
    x = pd.to_numeric(model.loc[shared], errors="coerce").to_numpy(dtype=np.float64)
    y = pd.to_numeric(human.loc[shared], errors="coerce").to_numpy(dtype=np.float64)
    finite = np.isfinite(x) & np.isfinite(y)
    shared = [c for c, keep in zip(shared, finite, strict=True) if keep]
    if len(shared) < MIN_SHARED_CONDITIONS:
        raise TopoInputError(
            f"only {len(shared)} shared condition(s) with values on both sides "
            f"({', '.join(map(str, shared)) or 'none'}); a correlation needs at least "
            f"{MIN_SHARED_CONDITIONS}"
        )
    return x[finite], y[finite], shared


def _rowwise_corr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson r of each row pair; NaN where either row is constant."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    degenerate = (np.ptp(a, axis=-1) == 0) | (np.ptp(b, axis=-1) == 0)
    da = a - a.mean(axis=-1, keepdims=True)
    db = b - b.mean(axis=-1, keepdims=True)
    numerator = np.einsum("ij,ij->i", da, db)
    denominator = np.sqrt(np.einsum("ij,ij->i", da, da) * np.einsum("ij,ij->i", db, db))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.clip(numerator / denominator, -1.0, 1.0)
    r[degenerate] = np.nan
    return r


# --------------------------------------------------------------------------------------------
# Selectivity, Moran distributions, Dice
# --------------------------------------------------------------------------------------------


def selectivity_dprime(
    profile: pd.Series,
    target_conditions: Iterable[str],
    other_conditions: Iterable[str],
    sem: pd.Series | None = None,
) -> float:
    """Target-vs-others selectivity d' of one condition profile.

    ``d' = (mean(profile[target]) - mean(profile[other])) / sqrt((s_t^2 + s_o^2) / 2)``.

    * With ``sem`` (a per-condition spread: SEM, or SD, as long as both sides of a comparison
      use the same kind), ``s_t^2`` is the mean of ``sem[target]^2`` and likewise ``s_o^2``:
      the difference in units of the pooled per-condition spread.
    * Without it, ``s_t^2`` and ``s_o^2`` are the variances (ddof=1) of the profile values
      across the target and other conditions; a single-condition set contributes 0.

    NaN when the denominator is 0.

    Parameters
    ----------
    profile : pandas.Series
        Mean response per condition.
    target_conditions, other_conditions : iterable of str
        Disjoint, non-empty sets of conditions in ``profile``.
    sem : pandas.Series, optional
        Spread per condition (indexed like ``profile``).

    Returns
    -------
    float

    Raises
    ------
    TopoInputError
        Empty or overlapping sets, or conditions missing from ``profile`` / ``sem``.
    """
    target, other = list(target_conditions), list(other_conditions)
    if not target or not other:
        raise TopoInputError("selectivity needs at least one target and one other condition")
    overlap = sorted(set(target) & set(other))
    if overlap:
        raise TopoInputError(f"conditions are both target and other: {overlap}")
    _require(profile, target + other, "profile")
    t = profile.loc[target].to_numpy(dtype=np.float64)
    o = profile.loc[other].to_numpy(dtype=np.float64)
    if sem is not None:
        _require(sem, target + other, "sem")
        var_t = float(np.mean(sem.loc[target].to_numpy(dtype=np.float64) ** 2))
        var_o = float(np.mean(sem.loc[other].to_numpy(dtype=np.float64) ** 2))
    else:
        var_t = float(np.var(t, ddof=1)) if t.size > 1 else 0.0
        var_o = float(np.var(o, ddof=1)) if o.size > 1 else 0.0
    pooled = math.sqrt((var_t + var_o) / 2.0)
    if pooled == 0 or not np.isfinite(pooled):
        return float("nan")
    return float((t.mean() - o.mean()) / pooled)


def compare_moran_distributions(a: Iterable[float], b: Iterable[float]) -> dict:
    """Compare two sets of island Moran's I values (e.g. model vs human, trained vs control).

    NaN values (islands with undefined I) are dropped. Welch's t-test
    (``scipy.stats.ttest_ind(equal_var=False)``, needs >= 2 values a side) and the two-sided
    Mann-Whitney U test (``scipy.stats.mannwhitneyu``, needs >= 1 a side); statistics that
    cannot be computed are NaN.

    Returns
    -------
    dict
        ``mean_a, sd_a, n_a, mean_b, sd_b, n_b, welch_t, welch_df, welch_p, mannwhitney_u,
        mannwhitney_p`` (sd with ddof=1).
    """
    x = np.asarray(list(a), dtype=np.float64)
    y = np.asarray(list(b), dtype=np.float64)
    x, y = x[np.isfinite(x)], y[np.isfinite(y)]
    nan = float("nan")
    out = {
        "mean_a": float(x.mean()) if x.size else nan,
        "sd_a": float(x.std(ddof=1)) if x.size > 1 else nan,
        "n_a": int(x.size),
        "mean_b": float(y.mean()) if y.size else nan,
        "sd_b": float(y.std(ddof=1)) if y.size > 1 else nan,
        "n_b": int(y.size),
        "welch_t": nan,
        "welch_df": nan,
        "welch_p": nan,
        "mannwhitney_u": nan,
        "mannwhitney_p": nan,
    }
    if x.size > 1 and y.size > 1 and (np.ptp(x) > 0 or np.ptp(y) > 0):
        welch = stats.ttest_ind(x, y, equal_var=False)
        out.update(
            welch_t=float(welch.statistic), welch_df=float(welch.df), welch_p=float(welch.pvalue)
        )
    if x.size and y.size:
        mwu = stats.mannwhitneyu(x, y, alternative="two-sided")
        out.update(mannwhitney_u=float(mwu.statistic), mannwhitney_p=float(mwu.pvalue))
    return out


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice coefficient ``2 |A & B| / (|A| + |B|)`` of two masks of the same shape.

    NaN when both masks are empty (overlap undefined).
    """
    a = np.asarray(a, dtype=bool)
    b = np.asarray(b, dtype=bool)
    if a.shape != b.shape:
        raise TopoInputError(f"Dice needs masks of the same shape, got {a.shape} and {b.shape}")
    total = int(a.sum()) + int(b.sum())
    return float(2 * np.count_nonzero(a & b) / total) if total else float("nan")


def _require(series: pd.Series, names: list[str], what: str) -> None:
    missing = [c for c in names if c not in series.index]
    if missing:
        raise TopoInputError(f"{what} has no value for conditions: {missing}")


# --------------------------------------------------------------------------------------------
# Condition map
# --------------------------------------------------------------------------------------------


@dataclass
class ConditionMap:
    """Which model condition / fROI corresponds to which human one.

    Attributes
    ----------
    conditions : dict of str to str
        Model condition -> human condition (one-to-one).
    frois : dict of str to str
        Model fROI -> human fROI or parcel category. A model fROI is ``'contrast@area'`` or just
        ``'contrast'`` (every area that has it).
    path : str or None
        The file it was read from.
    """

    conditions: dict[str, str] = field(default_factory=dict)
    frois: dict[str, str] = field(default_factory=dict)
    path: str | None = None


def parse_model_froi(key: str) -> tuple[str, str | None]:
    """Split ``'contrast@area'`` into ``(contrast, area)``; a bare contrast has area None."""
    contrast, _, area = key.partition("@")
    return contrast.strip(), (area.strip() or None)


def load_condition_map(path: str | Path) -> ConditionMap:
    """Read a condition map from TOML or CSV.

    TOML::

        [conditions]              # model condition = human condition
        false_belief = "false_belief"
        sentences = "nonwords"

        [frois]                   # model fROI = human fROI (roi label) or parcel category
        "language@layer.6" = "language"
        "tom" = "tom"

    CSV: columns ``kind, model, human`` with ``kind`` ``condition`` or ``froi``.

    Raises
    ------
    TopoInputError
        Unreadable file, unknown format, missing columns / sections, empty names, a model name
        given twice, or two model conditions mapped onto one human condition.
    """
    path = Path(path)
    if not path.is_file():
        raise TopoInputError("condition map not found", path)
    suffix = path.suffix.lower()
    if suffix == ".toml":
        pairs = _condition_pairs_toml(path)
    elif suffix in (".csv", ".tsv"):
        pairs = _condition_pairs_csv(path, "\t" if suffix == ".tsv" else ",")
    else:
        raise TopoInputError("condition map must be a .toml or .csv file", path)
    cmap = ConditionMap(path=str(path))
    for kind, model, human in pairs:
        if not model or not human:
            raise TopoInputError(f"condition map has an empty {kind} name", path)
        target = cmap.conditions if kind == "condition" else cmap.frois
        if model in target:
            raise TopoInputError(f"condition map gives model {kind} '{model}' twice", path)
        target[model] = human
    if not cmap.conditions:
        raise TopoInputError("condition map maps no conditions", path)
    seen: dict[str, str] = {}
    for model, human in cmap.conditions.items():
        if human in seen:
            raise TopoInputError(
                f"condition map maps both '{seen[human]}' and '{model}' onto human '{human}'",
                path,
            )
        seen[human] = model
    return cmap


def validate_condition_map(
    cmap: ConditionMap,
    model_conditions: Iterable[str],
    human_conditions: Iterable[str],
    model_frois: Iterable[str] | None = None,
    human_frois: Iterable[str] | None = None,
) -> None:
    """Check that every name in a condition map exists on its side.

    Parameters
    ----------
    cmap : ConditionMap
    model_conditions, human_conditions : iterable of str
        Conditions the model results and the human data actually have.
    model_frois : iterable of str, optional
        Model fROIs as ``'contrast@area'``; a map key without ``@area`` matches any area.
    human_frois : iterable of str, optional
        Human fROI labels and parcel categories.

    Raises
    ------
    TopoInputError
        One line listing every absent name, by side.
    """
    model_set, human_set = set(model_conditions), set(human_conditions)
    problems = []
    absent_model = [c for c in cmap.conditions if c not in model_set]
    absent_human = [c for c in cmap.conditions.values() if c not in human_set]
    if absent_model:
        problems.append(f"model conditions absent from the model results: {absent_model}")
    if absent_human:
        problems.append(f"human conditions absent from the human data: {absent_human}")
    if model_frois is not None:
        available = {parse_model_froi(f) for f in model_frois}
        contrasts = {contrast for contrast, _ in available}
        absent = [
            key
            for key in cmap.frois
            if (parse_model_froi(key) not in available)
            and not (parse_model_froi(key)[1] is None and parse_model_froi(key)[0] in contrasts)
        ]
        if absent:
            problems.append(f"model fROIs absent from the model results: {absent}")
    if human_frois is not None:
        human_froi_set = set(human_frois)
        absent = [h for h in cmap.frois.values() if h not in human_froi_set]
        if absent:
            problems.append(f"human fROIs/categories absent from the human data: {absent}")
    if problems:
        raise TopoInputError("condition map: " + "; ".join(problems), cmap.path)


def apply_condition_map(model_profile: pd.Series, cmap: ConditionMap) -> pd.Series:
    """The model profile restricted to mapped conditions and renamed to the human names."""
    kept = [c for c in model_profile.index if c in cmap.conditions]
    renamed = model_profile.loc[kept].copy()
    renamed.index = [cmap.conditions[c] for c in kept]
    return renamed


def _condition_pairs_toml(path: Path) -> list[tuple[str, str, str]]:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        try:
            import tomli as tomllib  # type: ignore[no-redef]
        except ModuleNotFoundError:
            raise TopoInputError("reading TOML needs Python 3.11+ or tomli", path) from None
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise TopoInputError(f"invalid TOML ({error})", path) from None
    unknown = sorted(set(document) - {"conditions", "frois"})
    if unknown:
        raise TopoInputError(
            f"condition map has unknown sections {unknown} (expected [conditions], [frois])",
            path,
        )
    pairs = []
    for section, kind in (("conditions", "condition"), ("frois", "froi")):
        table = document.get(section, {})
        if not isinstance(table, dict):
            raise TopoInputError(f'[{section}] must be a table of name = "name"', path)
        for model, human in table.items():
            if not isinstance(human, str):
                raise TopoInputError(f"[{section}] {model} must map to a string", path)
            pairs.append((kind, str(model).strip(), human.strip()))
    return pairs


def _condition_pairs_csv(path: Path, delimiter: str) -> list[tuple[str, str, str]]:
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle, delimiter=delimiter))
            header = [h.strip().lower() for h in (rows[0].keys() if rows else [])]
    except (UnicodeDecodeError, csv.Error) as error:
        raise TopoInputError(f"cannot read as CSV ({error})", path) from None
    missing = [c for c in ("kind", "model", "human") if c not in header]
    if missing:
        raise TopoInputError(f"condition map CSV is missing columns: {', '.join(missing)}", path)
    pairs = []
    for number, row in enumerate(rows, start=2):
        clean = {str(k).strip().lower(): (v or "").strip() for k, v in row.items()}
        kind = clean["kind"].lower().rstrip("s")
        if kind not in ("condition", "froi"):
            raise TopoInputError(
                f"line {number}: kind must be 'condition' or 'froi', got {clean['kind']!r}", path
            )
        pairs.append((kind, clean["model"], clean["human"]))
    return pairs
