"""Statistics on sufficient statistics: Welch t, weighted contrasts, Cohen's d, BH-FDR, ANOVA.

Every function takes per-group moments (``n`` [G], ``mean`` [G, U], ``var`` [G, U], variances
with ``ddof=1``) or a :class:`~topocli.stats.suffstats.SufficientStats`, never raw activations,
and is vectorised over units (and over categories for :func:`category_vs_rest`).

Conventions
-----------
- ``alternative``: ``"greater"`` (the contrast is positive, e.g. ON > OFF), ``"less"`` or
  ``"two-sided"``; p-values come from Student's t with the Welch–Satterthwaite df.
- A unit whose standard error is 0 (zero variance in every condition with nonzero weight) or
  not finite gets ``t = df = p = NaN``: never ``inf``, and NaN p-values are never significant and
  not counted by :func:`bh_fdr`. No warnings are printed for them.
- Large arrays are processed in chunks (bounded temporaries) and the p-value (the regularised
  incomplete beta function, the costliest step) runs on all CPU cores.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple

import numpy as np
from scipy import special

from topocli.errors import TopoInputError
from topocli.stats.suffstats import cpu_threads

ALTERNATIVES = ("greater", "less", "two-sided")
_PARALLEL_MIN = 1 << 16  # p-values on fewer elements than this run in one thread
_CHUNK_ELEMS = 1 << 16  # elements per (cache-sized) chunk of [K, U] work in category_vs_rest


class TTestResult(NamedTuple):
    """Welch / contrast t-test: statistic, Welch–Satterthwaite df and p-value (same shapes)."""

    t: np.ndarray
    df: np.ndarray
    p: np.ndarray


class CategoryTTest(NamedTuple):
    """Category-vs-rest (or vs-baseline) maps, each [K, U]: t, df, p and Cohen's d."""

    t: np.ndarray
    df: np.ndarray
    p: np.ndarray
    d: np.ndarray


class AnovaResult(NamedTuple):
    """One-way ANOVA per unit: F, df1, df2, p [U], and the preferred group (argmax mean) [U]."""

    f: np.ndarray
    df1: float
    df2: float
    p: np.ndarray
    preferred: np.ndarray


# ---------------------------------------------------------------------------------------- helpers
def _check_alternative(alternative: str) -> str:
    if alternative not in ALTERNATIVES:
        raise ValueError(f"alternative must be one of {ALTERNATIVES}, got {alternative!r}")
    return alternative


def _apply_chunked(fn: Any, a: Any, b: Any, out: np.ndarray | None = None) -> np.ndarray:
    """``fn(a_chunk, b_chunk, out_chunk)`` over broadcast ``a``, ``b``, split over CPU threads.

    Chunks run along the first axis (no copy of broadcast views); elementwise scipy / numpy
    ufuncs release the GIL, so the threads run in parallel.
    """
    a, b = np.broadcast_arrays(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64))
    if out is None:
        out = np.empty(a.shape)
    n_threads = cpu_threads()
    if a.ndim == 0 or a.size < _PARALLEL_MIN or n_threads == 1:
        fn(a, b, out)
        return out
    if a.shape[0] < 4 * n_threads:  # few rows: work on flat copies (small K)
        flat_out = out.reshape(-1)
        res = _apply_chunked(fn, a.reshape(-1), b.reshape(-1), flat_out)
        if not np.shares_memory(res, out):  # pragma: no cover - out is contiguous
            out[...] = res.reshape(out.shape)
        return out
    bounds = np.linspace(0, a.shape[0], 4 * n_threads + 1).astype(np.int64)

    def work(i: int) -> None:
        s = slice(bounds[i], bounds[i + 1])
        fn(a[s], b[s], out[s])

    with ThreadPoolExecutor(n_threads) as pool:
        list(pool.map(work, range(len(bounds) - 1)))
    return out


def _p_greater(t: np.ndarray, df: np.ndarray, out: np.ndarray) -> None:
    special.stdtr(df, -t, out=out)


def _p_less(t: np.ndarray, df: np.ndarray, out: np.ndarray) -> None:
    special.stdtr(df, t, out=out)


def _p_two_sided(t: np.ndarray, df: np.ndarray, out: np.ndarray) -> None:
    special.stdtr(df, -np.abs(t), out=out)
    out *= 2.0
    np.minimum(out, 1.0, out=out, where=~np.isnan(out))


_P_FUNCS = {"greater": _p_greater, "less": _p_less, "two-sided": _p_two_sided}


def t_pvalue(
    t: Any, df: Any, alternative: str = "greater", out: np.ndarray | None = None
) -> np.ndarray:
    """p-value of Student's t with ``df`` degrees of freedom (NaN stays NaN).

    ``greater``: P(T >= t); ``less``: P(T <= t); ``two-sided``: 2 P(T >= |t|), capped at 1.
    Uses ``scipy.special.stdtr`` (what scipy.stats' t distribution uses), on all CPU cores.
    """
    _check_alternative(alternative)
    return _apply_chunked(_P_FUNCS[alternative], t, df, out)


def _f_sf(df1: float, df2: float) -> Any:
    def fn(f: np.ndarray, _: np.ndarray, out: np.ndarray) -> None:
        special.fdtrc(df1, df2, f, out=out)

    return fn


def _t_and_df(effect: np.ndarray, terms: Sequence[np.ndarray], dofs: Sequence[Any]) -> tuple:
    """t = effect / sqrt(sum terms), Satterthwaite df = (sum terms)^2 / sum(terms^2 / dof).

    ``terms`` are the variance contributions c_i^2 s_i^2 / n_i. A standard error of 0 or a
    non-finite one gives NaN t and df.
    """
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        se2 = terms[0] + 0.0
        for term in terms[1:]:
            se2 = se2 + term
        denom = sum(term * term / dof for term, dof in zip(terms, dofs, strict=True))
        bad = ~np.isfinite(se2) | (se2 <= 0)
        t = effect / np.sqrt(se2)
        df = se2 * se2 / denom
    t = np.where(bad, np.nan, t)
    df = np.where(bad | ~np.isfinite(df), np.nan, df)
    t = np.where(np.isnan(df), np.nan, t)
    return t, df


# ---------------------------------------------------------------------------------------- t tests
def welch_t(
    n1: Any,
    mean1: Any,
    var1: Any,
    n2: Any,
    mean2: Any,
    var2: Any,
    alternative: str = "greater",
) -> TTestResult:
    """Welch's unequal-variance t-test from moments (broadcasting over units).

    Parameters
    ----------
    n1, n2 : float or ndarray
        Group sizes (need >= 2 each; otherwise the result is NaN).
    mean1, mean2 : ndarray
        Group means, e.g. [U].
    var1, var2 : ndarray
        Group variances with ddof=1.
    alternative : {"greater", "less", "two-sided"}
        ``greater`` tests mean1 > mean2.

    Returns
    -------
    TTestResult
        ``t = (mean1 - mean2) / sqrt(var1/n1 + var2/n2)``, Welch–Satterthwaite ``df`` and ``p``;
        equals ``scipy.stats.ttest_ind(a, b, equal_var=False, alternative=...)`` except that a
        zero standard error gives NaN (scipy: inf or NaN).
    """
    _check_alternative(alternative)
    n1 = np.asarray(n1, dtype=np.float64)
    n2 = np.asarray(n2, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        v1 = np.where(n1 >= 2, np.asarray(var1, dtype=np.float64) / n1, np.nan)
        v2 = np.where(n2 >= 2, np.asarray(var2, dtype=np.float64) / n2, np.nan)
        effect = np.asarray(mean1, dtype=np.float64) - np.asarray(mean2, dtype=np.float64)
    t, df = _t_and_df(effect, [v1, v2], [n1 - 1, n2 - 1])
    return TTestResult(t, df, t_pvalue(t, df, alternative))


def _nonzero_weights(weights: Any, n_groups: int) -> tuple[np.ndarray, np.ndarray]:
    w = np.asarray(weights, dtype=np.float64).reshape(-1)
    if w.size != n_groups:
        raise ValueError(f"{w.size} weights for {n_groups} groups")
    idx = np.flatnonzero(w != 0)
    if idx.size == 0:
        raise ValueError("contrast has no nonzero weight")
    return w, idx


def contrast_t(
    weights: Any,
    n: Any,
    mean: Any,
    var: Any,
    alternative: str = "greater",
) -> TTestResult:
    """Weighted contrast t over several conditions with unequal variances.

    ``t = c'mu / sqrt(sum_i c_i^2 s_i^2 / n_i)`` with the Welch–Satterthwaite
    ``df = (sum_i a_i)^2 / sum_i a_i^2 / (n_i - 1)``, ``a_i = c_i^2 s_i^2 / n_i``, over the
    conditions with nonzero weight. Weights (1, -1) give :func:`welch_t`; a single weight (1,)
    gives the one-sample t-test against 0.

    Parameters
    ----------
    weights : array_like [G]
        Contrast weights (groups with weight 0 are ignored, even when empty).
    n : array_like [G]
        Group sizes.
    mean, var : ndarray [G, ...]
        Group means and ddof=1 variances.
    alternative : {"greater", "less", "two-sided"}
        ``greater`` tests c'mu > 0.
    """
    _check_alternative(alternative)
    mean = np.asarray(mean, dtype=np.float64)
    var = np.asarray(var, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64).reshape(-1)
    w, idx = _nonzero_weights(weights, mean.shape[0])
    effect = np.tensordot(w[idx], mean[idx], axes=1)
    terms, dofs = [], []
    with np.errstate(invalid="ignore", divide="ignore"):
        for i in idx:
            ok = n[i] >= 2
            terms.append(w[i] ** 2 * var[i] / n[i] if ok else np.full(var.shape[1:], np.nan))
            dofs.append(n[i] - 1)
    t, df = _t_and_df(effect, terms, dofs)
    return TTestResult(t, df, t_pvalue(t, df, alternative))


# ---------------------------------------------------------------------------------------- effect
def cohens_d(n1: Any, mean1: Any, var1: Any, n2: Any, mean2: Any, var2: Any) -> np.ndarray:
    """Cohen's d of two groups: ``(mean1 - mean2) / s_pooled``.

    ``s_pooled^2 = ((n1 - 1) var1 + (n2 - 1) var2) / (n1 + n2 - 2)`` (the classic pooled SD,
    not Hedges' bias correction). NaN where the pooled SD is 0 or undefined.
    """
    n1 = np.asarray(n1, dtype=np.float64)
    n2 = np.asarray(n2, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        pooled = ((n1 - 1) * np.asarray(var1) + (n2 - 1) * np.asarray(var2)) / (n1 + n2 - 2)
        d = (np.asarray(mean1, dtype=np.float64) - np.asarray(mean2)) / np.sqrt(pooled)
    return np.where(np.isfinite(d) & (pooled > 0), d, np.nan)


def contrast_d(weights: Any, n: Any, mean: Any, var: Any) -> np.ndarray:
    """Cohen's d of a weighted contrast.

    Definition: ``d = (c'mu / s) / s_pooled`` where ``s = max(sum of positive weights, sum of
    |negative weights|)`` rescales the weights so that each side sums to 1 (``"a - b"``,
    ``"math - 0.5*fb - 0.5*fp"`` and ``"2*math - fb - fp"`` all give the same d, as they give the
    same t) and ``s_pooled^2 = sum_i (n_i - 1) var_i / sum_i (n_i - 1)`` over the conditions with
    nonzero weight. Weights (1, -1) give :func:`cohens_d`.
    """
    mean = np.asarray(mean, dtype=np.float64)
    var = np.asarray(var, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64).reshape(-1)
    w, idx = _nonzero_weights(weights, mean.shape[0])
    scale = max(w[w > 0].sum(), -w[w < 0].sum())
    effect = np.tensordot(w[idx] / scale, mean[idx], axes=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        dof = np.clip(n[idx] - 1, 0, None)
        pooled = np.tensordot(dof, np.nan_to_num(var[idx], nan=0.0), axes=1) / dof.sum()
        d = effect / np.sqrt(pooled)
    return np.where(np.isfinite(d) & (pooled > 0), d, np.nan)


# ---------------------------------------------------------------------------------------- FDR
def _bh_1d(p: np.ndarray) -> np.ndarray:
    m = p.size
    order = np.argsort(p)
    ranked = p[order] * (m / np.arange(1, m + 1, dtype=np.float64))
    q_sorted = np.minimum.accumulate(ranked[::-1])[::-1]
    np.minimum(q_sorted, 1.0, out=q_sorted)
    q = np.empty(m)
    q[order] = q_sorted
    return q


def bh_fdr(p: Any, groups: Any = None) -> np.ndarray:
    """Benjamini–Hochberg adjusted p-values (q-values).

    Parameters
    ----------
    p : array_like
        p-values, any shape. NaN stays NaN and is not counted in the number of tests m.
    groups : array_like, optional
        Labels of p's shape (e.g. the area of each unit): the correction runs separately within
        each label (NaN p-values are left out per label too).

    Returns
    -------
    ndarray
        q of p's shape: ``q_(i) = min_{j >= i} min(1, m p_(j) / j)``, equal to statsmodels'
        ``multipletests(method="fdr_bh")`` and ``scipy.stats.false_discovery_control``.
    """
    p = np.asarray(p, dtype=np.float64)
    flat = p.reshape(-1)
    finite = np.isfinite(flat)
    if np.any((flat[finite] < 0) | (flat[finite] > 1)):
        raise ValueError("p-values must lie in [0, 1]")
    q = np.full(flat.shape, np.nan)
    if groups is None:
        idx = np.flatnonzero(finite)
        if idx.size:
            q[idx] = _bh_1d(flat[idx]) if idx.size < flat.size else _bh_1d(flat)
        return q.reshape(p.shape)
    labels = np.asarray(groups).reshape(-1)
    if labels.shape != flat.shape:
        raise ValueError(f"groups must have p's shape {p.shape}, got {np.shape(groups)}")
    _, inverse = np.unique(labels, return_inverse=True)
    inverse = inverse.reshape(-1)
    order = np.argsort(inverse, kind="stable")
    bounds = np.flatnonzero(np.diff(inverse[order])) + 1
    for members in np.split(order, bounds):
        idx = members[finite[members]]
        if idx.size:
            q[idx] = _bh_1d(flat[idx])
    return q.reshape(p.shape)


# ---------------------------------------------------------------------------------------- ANOVA
def one_way_anova(n: Any, mean: Any, var: Any) -> AnovaResult:
    """One-way ANOVA across G groups per unit, from moments (equals ``scipy.stats.f_oneway``).

    Groups with n = 0 are left out; groups with n = 1 add to the between-groups sum only.
    ``F = (SSB / (G - 1)) / (SSW / (N - G))``; a unit with SSW = 0 gets F = p = NaN. The
    preferred group of a unit is the argmax of its means over the groups that are present (the
    index into the given groups, e.g. the preferred frequency of a tonotopy localizer).
    """
    n = np.asarray(n, dtype=np.float64).reshape(-1)
    mean = np.asarray(mean, dtype=np.float64)
    var = np.asarray(var, dtype=np.float64)
    keep = np.flatnonzero(n > 0)
    if keep.size < 2:
        raise ValueError("one-way ANOVA needs at least 2 non-empty groups")
    nk = n[keep]
    total = nk.sum()
    df1 = float(keep.size - 1)
    df2 = float(total - keep.size)
    tail = (slice(None),) + (None,) * (mean.ndim - 1)
    mk = mean[keep]
    grand = np.tensordot(nk, mk, axes=1) / total
    ssb = np.tensordot(nk, (mk - grand) ** 2, axes=1)
    m2 = np.where((nk >= 2)[tail], (nk - 1)[tail] * np.nan_to_num(var[keep], nan=0.0), 0.0)
    ssw = m2.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        f = (ssb / df1) / (ssw / df2) if df2 > 0 else np.full(ssb.shape, np.nan)
    f = np.where(np.isfinite(f) & (ssw > 0), f, np.nan)
    p = _apply_chunked(_f_sf(df1, df2), f, 0.0)
    preferred = keep[np.argmax(mk, axis=0)]
    return AnovaResult(f, df1, df2, p, preferred)


# ---------------------------------------------------------------------------------------- contrasts
_NUMBER = re.compile(r"(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_IDENT = re.compile(r"[A-Za-z_][\w.]*")
_IDENT_CHAR = re.compile(r"[\w.]")


def _tokenize(expr: str, known: Sequence[str]) -> list[tuple[str, str]]:
    """Tokens (kind, text): op ('+', '-', '>', '*'), num, name. Known names match longest first."""
    by_length = sorted(set(known), key=len, reverse=True)
    tokens: list[tuple[str, str]] = []
    i = 0
    while i < len(expr):
        ch = expr[i]
        if ch.isspace():
            i += 1
            continue
        if ch in "+-*>":
            tokens.append(("op", ch))
            i += 1
            continue
        name = next(
            (
                k
                for k in by_length
                if k
                and expr.startswith(k, i)
                and not (i + len(k) < len(expr) and _IDENT_CHAR.match(expr[i + len(k)]))
            ),
            None,
        )
        if name is not None:
            tokens.append(("name", name))
            i += len(name)
            continue
        m = _NUMBER.match(expr, i)
        if m and not (m.end() < len(expr) and re.match(r"[A-Za-z_]", expr[m.end()])):
            tokens.append(("num", m.group()))
            i = m.end()
            continue
        m = _IDENT.match(expr, i)
        if m:
            tokens.append(("name", m.group()))
            i = m.end()
            continue
        raise TopoInputError(f"contrast {expr!r}: unexpected character {ch!r} at position {i}")
    return tokens


def _parse_side(tokens: list[tuple[str, str]], expr: str) -> tuple[list[tuple[float, str]], bool]:
    """Terms ``[sign] [number [*]] name`` joined by + / -; returns terms and 'explicit weights'."""
    terms: list[tuple[float, str]] = []
    explicit = False
    i = 0
    if not tokens:
        raise TopoInputError(f"contrast {expr!r}: a side of the contrast is empty")
    while i < len(tokens):
        sign = 1.0
        if terms:
            if tokens[i] not in (("op", "+"), ("op", "-")):
                raise TopoInputError(
                    f"contrast {expr!r}: expected '+' or '-' before {tokens[i][1]!r}"
                )
        while i < len(tokens) and tokens[i] in (("op", "+"), ("op", "-")):
            sign = -sign if tokens[i][1] == "-" else sign
            i += 1
        coef = 1.0
        if i < len(tokens) and tokens[i][0] == "num":
            coef = float(tokens[i][1])
            explicit = True
            i += 1
            if i < len(tokens) and tokens[i] == ("op", "*"):
                i += 1
        if i >= len(tokens) or tokens[i][0] != "name":
            got = "the end" if i >= len(tokens) else repr(tokens[i][1])
            raise TopoInputError(f"contrast {expr!r}: expected a condition name, got {got}")
        name = tokens[i][1]
        i += 1
        if i < len(tokens) and tokens[i] == ("op", "*"):
            if i + 1 >= len(tokens) or tokens[i + 1][0] != "num":
                raise TopoInputError(f"contrast {expr!r}: expected a number after '{name} *'")
            coef *= float(tokens[i + 1][1])
            explicit = True
            i += 2
        terms.append((sign * coef, name))
    return terms, explicit


def parse_contrast(expr: str, known_conditions: Iterable[str]) -> dict[str, float]:
    """Parse a contrast expression into condition weights.

    Accepted forms::

        "sentences>nonwords"                          -> {sentences: 1, nonwords: -1}
        "a-b"                                         -> {a: 1, b: -1}
        "math - 0.5*false_belief - 0.5*false_photo"   -> weights as written
        "0.5*false_belief+0.5*false_photo-nonwords"   -> weights as written
        "faces > objects + places"                    -> {faces: 1, objects: -0.5, places: -0.5}

    Terms are ``[+|-] [number [*]] name [* number]``. With ``>``, the expression is
    ``left - (right)`` with each side scaled to a total weight of 1 (a side without numbers is
    averaged), so the weights always sum to zero: ``"2*a + b > c"`` is
    ``{a: 2/3, b: 1/3, c: -1}``. Condition names are matched against ``known_conditions``
    longest first (so names may contain '-' or digits); repeated names add
    up; names whose weights cancel are dropped.

    Raises
    ------
    TopoInputError
        On a syntax error, an unknown condition (the message lists the known ones) or a
        contrast with no nonzero weight.
    """
    known = list(dict.fromkeys(str(k) for k in known_conditions))
    if not isinstance(expr, str) or not expr.strip():
        raise TopoInputError("empty contrast expression")
    tokens = _tokenize(expr, known)
    cut = [i for i, tok in enumerate(tokens) if tok == ("op", ">")]
    if len(cut) > 1:
        raise TopoInputError(f"contrast {expr!r}: use at most one '>'")
    if cut:
        left, _ = _parse_side(tokens[: cut[0]], expr)
        right, _ = _parse_side(tokens[cut[0] + 1 :], expr)
        left, right = _unit_total(left, expr), _unit_total(right, expr)
        terms = left + [(-c, name) for c, name in right]
    else:
        terms, _ = _parse_side(tokens, expr)
    unknown = [name for _, name in terms if name not in known]
    if unknown:
        listed = ", ".join(known) if known else "(none)"
        raise TopoInputError(
            f"unknown condition {unknown[0]!r} in contrast {expr!r}; known conditions: {listed}"
        )
    weights: dict[str, float] = {}
    for coef, name in terms:
        weights[name] = weights.get(name, 0.0) + coef
    weights = {k: v for k, v in weights.items() if v != 0}
    if not weights:
        raise TopoInputError(f"contrast {expr!r} has no nonzero weight")
    return weights



def _unit_total(terms: list[tuple[float, str]], expr: str) -> list[tuple[float, str]]:
    total = sum(c for c, _ in terms)
    if total <= 0:
        raise TopoInputError(f"contrast {expr!r}: each side of '>' needs a positive total weight")
    return [(c / total, name) for c, name in terms]


def normalized_weights(weights: Mapping[str, float]) -> dict[str, float]:
    """Weights scaled so the positive ones sum to 1, zeros dropped.

    Welch t, p and the selected units do not change when all weights are multiplied by a
    positive number, so ``a - b``, ``2*a - 2*b`` and ``a > b`` are one contrast; this is the form
    they share.
    """
    nonzero = {str(k): float(v) for k, v in weights.items() if float(v) != 0.0}
    positive = sum(v for v in nonzero.values() if v > 0)
    scale = positive if positive > 0 else sum(abs(v) for v in nonzero.values()) or 1.0
    return {k: v / scale for k, v in nonzero.items()}


def same_contrast(a: Mapping[str, float], b: Mapping[str, float], rtol: float = 1e-9) -> bool:
    """Whether two weight maps are the same contrast up to a positive scale."""
    na, nb = normalized_weights(a), normalized_weights(b)
    if set(na) != set(nb):
        return False
    return all(abs(na[k] - nb[k]) <= rtol * max(1.0, abs(na[k])) for k in na)


def contrast_name(weights: Mapping[str, float]) -> str:
    """The canonical name of a contrast: ``a-b``, ``a-0.5*b-0.5*c``, ``0.5*a+0.5*b-c``.

    Positive terms come first, each side in the order the weights were given; the weights are
    those of :func:`normalized_weights`, so every spelling of one contrast gets one name.
    """
    norm = normalized_weights(weights)
    ordered = [k for k in norm if norm[k] > 0] + [k for k in norm if norm[k] < 0]
    parts = []
    for i, name in enumerate(ordered):
        w = norm[name]
        sign = "-" if w < 0 else ("+" if i else "")
        coef = "" if abs(abs(w) - 1.0) < 1e-12 else f"{abs(w):.6g}*"
        parts.append(f"{sign}{coef}{name}")
    return "".join(parts)


def match_contrast(
    expr: str, named: Mapping[str, Mapping[str, float]], conditions: Iterable[str]
) -> tuple[str, dict[str, float]]:
    """Resolve a ``--contrast`` value against a set of named contrasts.

    Parameters
    ----------
    expr : str
        A contrast's name or any expression of it (``a>b``, ``a-b``, ``a - b``, ``1*a - 1*b``).
    named : mapping
        Contrast name -> weights (a localizer's contrasts, or a results folder's).
    conditions : iterable of str
        The conditions an expression may name.

    Returns
    -------
    name, weights : str, dict
        The named contrast the expression equals (its own name and weights), or, when it equals
        none of them, :func:`contrast_name` of the parsed weights and those weights.
    """
    if expr in named:
        return expr, dict(named[expr])
    weights = parse_contrast(expr, conditions)
    for name, other in named.items():
        if same_contrast(weights, other):
            return name, dict(other)
    return contrast_name(weights), weights


MIN_WEIGHT = 1e-12


def check_weights(
    weights: Mapping[str, float] | Sequence[float] | np.ndarray, require_zero_sum: bool = True
) -> Mapping[str, float] | Sequence[float] | np.ndarray:
    """Validate contrast weights; returns them unchanged.

    Raises ``TopoInputError`` when all weights are zero or not finite, or, with
    ``require_zero_sum``, when they do not sum to zero (relative tolerance 1e-9).
    """
    values = np.asarray(
        list(weights.values()) if isinstance(weights, Mapping) else weights, dtype=np.float64
    ).reshape(-1)
    shown = (
        ", ".join(f"{k}: {v:g}" for k, v in weights.items())
        if isinstance(weights, Mapping)
        else ", ".join(f"{v:g}" for v in values)
    )
    if values.size == 0 or not np.all(np.isfinite(values)) or not np.any(values != 0):
        raise TopoInputError(f"contrast weights must be finite and not all zero ({shown})")
    tiny = np.abs(values[values != 0]).min()
    if tiny < MIN_WEIGHT:
        # below this, products with responses fall into float64's subnormal range
        raise TopoInputError(
            f"contrast weights must be 0 or at least {MIN_WEIGHT:g} in magnitude, got {tiny:g} "
            f"({shown})"
        )
    total = float(values.sum())
    if require_zero_sum and abs(total) > 1e-9 * max(1.0, float(np.abs(values).sum())):
        raise TopoInputError(f"contrast weights sum to {total:g}, not 0 ({shown})")
    return weights


def weights_vector(weights: Mapping[str, float], conditions: Sequence[str]) -> np.ndarray:
    """Weights as a vector in the order of ``conditions`` (0 for conditions not named)."""
    index = {c: i for i, c in enumerate(conditions)}
    missing = [k for k in weights if k not in index]
    if missing:
        raise TopoInputError(
            f"unknown condition {missing[0]!r}; known conditions: {', '.join(conditions)}"
        )
    w = np.zeros(len(conditions))
    for k, v in weights.items():
        w[index[k]] = v
    return w


# ---------------------------------------------------------------------------------------- screens
def _category_maps(
    n1: np.ndarray,
    mean1: np.ndarray,
    m2_1: np.ndarray,
    n2: np.ndarray,
    mean2: np.ndarray,
    m2_2: np.ndarray,
    out: CategoryTTest,
    cols: slice,
) -> None:
    """Write t, df, d for one column chunk into ``out`` (n* [K, 1], means / m2 [K, W])."""
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        a1 = m2_1 / (n1 * (n1 - 1))
        a2 = m2_2 / (n2 * (n2 - 1))
        se2 = a1 + a2
        effect = mean1 - mean2
        t = effect / np.sqrt(se2)
        df = se2 * se2 / (a1 * a1 / (n1 - 1) + a2 * a2 / (n2 - 1))
        d = effect / np.sqrt((m2_1 + m2_2) / (n1 + n2 - 2))
    bad = ~np.isfinite(se2) | (se2 <= 0) | ~np.isfinite(df) | (n1 < 2) | (n2 < 2)
    t[bad] = np.nan
    df[bad] = np.nan
    d[~np.isfinite(d)] = np.nan
    out.t[:, cols] = t
    out.df[:, cols] = df
    out.d[:, cols] = d


def _empty_maps(k: int, u: int) -> CategoryTTest:
    return CategoryTTest(np.empty((k, u)), np.empty((k, u)), np.empty((k, u)), np.empty((k, u)))


def category_vs_rest(
    stats: Any, alternative: str = "greater", pvalues: bool = True
) -> CategoryTTest:
    """Every group against the union of all other groups, for all K groups at once.

    The rest of group k is computed from the totals minus the group (no pass over raw data, no
    loop over K): with ``N, mu, M2`` over all groups, ``n_r = N - n_k``,
    ``mu_r = mu - n_k (mu_k - mu) / n_r`` and
    ``M2_r = M2 - M2_k - n_k n_r / N (mu_k - mu_r)^2`` (clipped at 0). Then Welch's t and
    Cohen's d (pooled SD of the category and its rest) as in :func:`welch_t` / :func:`cohens_d`.
    Equals a per-category loop of ``scipy.stats.ttest_ind(x[g == k], x[g != k],
    equal_var=False)``.

    Parameters
    ----------
    stats : SufficientStats
        Per-group moments (anything with ``count``, ``mean``, ``m2``).
    alternative : {"greater", "less", "two-sided"}
        ``greater``: the category responds more than the rest.
    pvalues : bool
        Compute p (the costliest step); with False, ``p`` is all NaN.

    Returns
    -------
    CategoryTTest
        t, df, p, d arrays [K, U] (float64).
    """
    _check_alternative(alternative)
    from topocli.stats.suffstats import pooled_moments

    count = np.asarray(stats.count, dtype=np.float64)
    mean = np.asarray(stats.mean, dtype=np.float64)
    m2 = np.asarray(stats.m2, dtype=np.float64)
    k, u = mean.shape
    out = _empty_maps(k, u)
    total_n, mu, m2_tot = pooled_moments(count, mean, m2)
    n_k = count[:, None]
    n_r = total_n - n_k
    with np.errstate(invalid="ignore", divide="ignore"):
        # per-category constants [K, 1] (inf / NaN for n < 2: those rows are blanked below)
        grow = total_n / n_r  # mu_k - mu_r = (mu_k - mu) * N / n_r
        between = n_k * total_n / n_r  # n_k n_r / N (mu_k - mu_r)^2 = this * (mu_k - mu)^2
        c1 = 1.0 / (n_k * (n_k - 1))
        c2 = 1.0 / (n_r * (n_r - 1))
        i1 = 1.0 / (n_k - 1)
        i2 = 1.0 / (n_r - 1)
    d_factor = np.sqrt(total_n - 2) if total_n > 2 else np.nan  # d = effect / sqrt(M2/(N-2))

    def chunk(cols: slice) -> None:
        mk = mean[:, cols]
        m2k = m2[:, cols]
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            delta = mk - mu[cols]
            effect = delta * grow
            sq = np.square(delta, out=delta)
            sq *= between
            within = np.subtract(m2_tot[cols], sq, out=sq)  # M2_k + M2_rest
            np.maximum(within, 0.0, out=within)
            a2 = within - m2k  # M2_rest
            np.maximum(a2, 0.0, out=a2)
            a2 *= c2
            a1 = m2k * c1
            se2 = a1 + a2
            bad = ~(se2 > 0)
            t = out.t[:, cols]
            np.sqrt(se2, out=t)
            np.divide(effect, t, out=t)
            a1 *= a1
            a1 *= i1
            a2 *= a2
            a2 *= i2
            a1 += a2
            se2 *= se2
            df = out.df[:, cols]
            np.divide(se2, a1, out=df)
            d = out.d[:, cols]
            np.sqrt(within, out=d)
            np.divide(effect, d, out=d)
            d *= d_factor
        t[bad] = np.nan
        df[bad] = np.nan
        d[~np.isfinite(d)] = np.nan

    width = max(1, _CHUNK_ELEMS // max(k, 1))
    _run_column_chunks(chunk, u, width)
    tiny = (count < 2) | (total_n - count < 2)
    for arr in (out.t, out.df, out.d):
        arr[tiny] = np.nan
    if pvalues:
        t_pvalue(out.t, out.df, alternative, out=out.p)
    else:
        out.p[:] = np.nan
    return out


def _run_column_chunks(fn: Any, n_cols: int, width: int) -> None:
    """Call ``fn(slice)`` on disjoint column chunks, spread over CPU threads."""
    chunks = [slice(c0, min(c0 + width, n_cols)) for c0 in range(0, n_cols, width)]
    n_threads = min(cpu_threads(), len(chunks))
    if n_threads <= 1:
        for cols in chunks:
            fn(cols)
        return
    with ThreadPoolExecutor(n_threads) as pool:
        list(pool.map(fn, chunks))


def category_vs_baseline(
    stats: Any,
    category_ids: Sequence[int] | np.ndarray,
    baseline_ids: Sequence[int] | np.ndarray,
    alternative: str = "greater",
    pvalues: bool = True,
) -> CategoryTTest:
    """Each listed category against the pooled baseline groups; maps [K, U] in the given order.

    A category that is also a baseline group raises ``ValueError`` (it would be compared with
    itself).
    """
    _check_alternative(alternative)
    cats = np.asarray(category_ids, dtype=np.int64).reshape(-1)
    base = np.unique(np.asarray(baseline_ids, dtype=np.int64))
    overlap = np.intersect1d(cats, base)
    if overlap.size:
        raise ValueError(f"groups {overlap.tolist()} are both category and baseline")
    count = np.asarray(stats.count, dtype=np.float64)
    mean = np.asarray(stats.mean, dtype=np.float64)
    m2 = np.asarray(stats.m2, dtype=np.float64)
    w = np.zeros(count.size)
    w[base] = count[base]
    from topocli.stats.suffstats import pooled_moments

    n_b, mu_b, m2_b = pooled_moments(w, mean, m2)
    out = _empty_maps(cats.size, mean.shape[1])
    width = max(1, _CHUNK_ELEMS // max(cats.size, 1))
    n_k = count[cats][:, None]
    n_b_arr = np.full_like(n_k, n_b)
    for c0 in range(0, mean.shape[1], width):
        cols = slice(c0, min(c0 + width, mean.shape[1]))
        _category_maps(
            n_k, mean[cats, cols], m2[cats, cols], n_b_arr, mu_b[cols], m2_b[cols], out, cols
        )
    if pvalues:
        t_pvalue(out.t, out.df, alternative, out=out.p)
    else:
        out.p[:] = np.nan
    return out


def variance_from_m2(count: Any, m2: Any, ddof: int = 1) -> np.ndarray:
    """``m2 / (n - ddof)`` with NaN where n < 2 (for moments held outside SufficientStats)."""
    n = np.asarray(count, dtype=np.float64)
    n = n.reshape(n.shape + (1,) * (np.ndim(m2) - n.ndim))
    with np.errstate(invalid="ignore", divide="ignore"):
        var = np.asarray(m2, dtype=np.float64) / (n - ddof)
    return np.where((n >= 2) & (n > ddof), var, np.nan)


__all__ = [
    "ALTERNATIVES",
    "AnovaResult",
    "CategoryTTest",
    "TTestResult",
    "bh_fdr",
    "category_vs_baseline",
    "category_vs_rest",
    "check_weights",
    "cohens_d",
    "contrast_d",
    "contrast_t",
    "one_way_anova",
    "parse_contrast",
    "normalized_weights",
    "same_contrast",
    "contrast_name",
    "match_contrast",
    "t_pvalue",
    "variance_from_m2",
    "weights_vector",
    "welch_t",
]
