"""Discovery: categories found in an unlabeled pool by walking a Ward tree of its embeddings.

Each pool stimulus is embedded with the model's own pooled final representation
(:func:`topocli.models.inputs.final_representation`, L2-normalised), a Ward hierarchical
clustering is built (``scipy.cluster.hierarchy.linkage``) and walked top-down. A node's *sheet
selectivity score* is the median Welch t of the node's stimuli against all the other pool
stimuli, taken over the node's significant units (BH q < ``--q`` and t > 0 among the units of
the sheet, or of ``--area``); a node with no significant unit scores its peak t. The root is
always split; a node larger than ``--max-size`` is always split; otherwise a node is split only
when one of its children (of at least ``--min-size`` stimuli) scores higher than the node
itself, else it is kept as a cluster. Every level's candidate nodes are disjoint, so one pass
over the activations (in memory or from the float16 cache) gives all their statistics.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from topocli.activations.source import ActivationSource, grouped_stats
from topocli.errors import TopoInputError

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


@dataclass
class Discovery:
    """Result of :func:`discover_clusters`."""

    labels: np.ndarray
    names: list[str]
    scores: list[float]
    log: pd.DataFrame
    linkage: np.ndarray
    kept_nodes: list[int]


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
