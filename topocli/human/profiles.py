"""Human fROI response tables: the EMFL format or ``roi, condition, mean, sem, n[, category]``.

:func:`load_human_profiles` reads either into one normalised shape; :func:`roi_profiles` and
:func:`category_profiles` turn it into condition profiles.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from topocli.errors import TopoInputError

EMFL_COLUMNS = (
    "roi_label",
    "condition",
    "modality",
    "parcel_category",
    "parcel_name",
    "hemisphere",
    "mean_beta_mean",
    "mean_beta_std",
    "mean_beta_sem",
    "mean_beta_count",
)


SIMPLE_COLUMNS = ("roi", "condition", "mean", "sem", "n")


PROFILE_COLUMNS = ("roi", "category", "condition", "mean", "sem", "n")


_EMFL_RENAME = {
    "roi_label": "roi",
    "parcel_category": "category",
    "mean_beta_mean": "mean",
    "mean_beta_sem": "sem",
    "mean_beta_count": "n",
    "mean_beta_std": "std",
}


def load_human_profiles(csv_path: str | Path) -> pd.DataFrame:
    """Read a human fROI response table and normalise it.

    Two formats are accepted (column names are matched case-insensitively):

    * EMFL: ``roi_label, condition, modality, parcel_category, parcel_name, hemisphere,
      mean_beta_mean, mean_beta_std, mean_beta_sem, mean_beta_count`` (the format of the EMFL
      reference table). Recognised by a ``roi_label`` or ``mean_beta_mean`` column.
    * simple: ``roi, condition, mean, sem, n`` and optionally ``category``; without it each
      fROI is its own category.

    Parameters
    ----------
    csv_path : str or Path
        The CSV file.

    Returns
    -------
    pandas.DataFrame
        Columns ``roi, category, condition, mean, sem, n`` (strings, strings, strings, float,
        float, float), followed by ``std, modality, parcel_name, hemisphere`` when the file
        has them. One row per (roi, condition), in file order.

    Raises
    ------
    TopoInputError
        Unreadable file, missing columns (all named), non-numeric values, duplicated
        (roi, condition) rows or an empty table.
    """
    path = Path(csv_path)
    table = _read_csv(path)
    table.columns = [str(c).strip().lower() for c in table.columns]
    emfl = "roi_label" in table.columns or "mean_beta_mean" in table.columns
    required = EMFL_COLUMNS if emfl else SIMPLE_COLUMNS
    missing = [c for c in required if c not in table.columns]
    if missing:
        kind = "EMFL" if emfl else "simple (roi, condition, mean, sem, n[, category])"
        raise TopoInputError(
            f"human profile table ({kind} format) is missing columns: {', '.join(missing)}", path
        )
    if emfl:
        table = table.rename(columns=_EMFL_RENAME)
    elif "category" not in table.columns:
        table["category"] = table["roi"]
    if table.empty:
        raise TopoInputError("human profile table has no rows", path)
    for column in ("roi", "category", "condition"):
        if table[column].isna().any():
            raise TopoInputError(f"human profile table has empty '{column}' values", path)
        table[column] = table[column].astype(str).str.strip()
    for column in ("mean", "sem", "n", "std"):
        if column in table.columns:
            table[column] = _numeric_column(table[column], column, path)
    if table["mean"].isna().any():
        rows = table.index[table["mean"].isna()].tolist()[:5]
        raise TopoInputError(f"human profile table has empty 'mean' values (rows {rows})", path)
    duplicated = table.duplicated(["roi", "condition"])
    if duplicated.any():
        first = table.loc[duplicated, ["roi", "condition"]].iloc[0].tolist()
        raise TopoInputError(
            f"human profile table repeats (roi, condition) pairs, e.g. {tuple(first)}", path
        )
    extra = [c for c in ("std", "modality", "parcel_name", "hemisphere") if c in table.columns]
    return table[list(PROFILE_COLUMNS) + extra].reset_index(drop=True)


def roi_profiles(profiles: pd.DataFrame) -> pd.DataFrame:
    """Condition profiles per fROI.

    Parameters
    ----------
    profiles : pandas.DataFrame
        Output of :func:`load_human_profiles`.

    Returns
    -------
    pandas.DataFrame
        Index ``condition`` (sorted), one column per fROI, values the mean response.
    """
    return profiles.pivot(index="condition", columns="roi", values="mean").sort_index()


def category_profiles(profiles: pd.DataFrame, categories: list[str] | None = None) -> pd.DataFrame:
    """Condition profiles per parcel category (e.g. ``language``, ``tom``, ``md``).

    A category's profile is the unweighted mean over its fROIs of their group-mean responses
    (each fROI counts once, whatever its size). A condition missing in some fROIs of the
    category is averaged over the fROIs that have it.

    Parameters
    ----------
    profiles : pandas.DataFrame
        Output of :func:`load_human_profiles`.
    categories : list of str, optional
        Keep only these categories, in this order; an unknown one raises TopoInputError.

    Returns
    -------
    pandas.DataFrame
        Index ``condition`` (sorted), one column per category.
    """
    table = profiles.groupby(["condition", "category"])["mean"].mean().unstack("category")
    table = table.sort_index()
    if categories is not None:
        unknown = [c for c in categories if c not in table.columns]
        if unknown:
            known = ", ".join(map(str, table.columns))
            raise TopoInputError(
                f"unknown human categories: {', '.join(unknown)} (the table has: {known})"
            )
        table = table[list(categories)]
    table.columns.name = "category"
    return table


def _read_csv(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise TopoInputError("file not found", path)
    try:
        return pd.read_csv(path)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise TopoInputError(f"cannot read as CSV ({first})", path) from None


def _numeric_column(column: pd.Series, name: str, path: Path) -> pd.Series:
    values = pd.to_numeric(column, errors="coerce")
    bad = values.isna() & column.notna()
    if bad.any():
        example = column[bad].iloc[0]
        raise TopoInputError(f"column '{name}' has a non-numeric value {example!r}", path)
    infinite = np.isinf(values.to_numpy(dtype=float))
    if infinite.any():
        row = int(np.flatnonzero(infinite)[0]) + 2  # the CSV line: header is line 1
        raise TopoInputError(f"column '{name}' has an infinite value (line {row})", path)
    return values.astype(float)
