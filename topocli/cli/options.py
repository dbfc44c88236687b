"""Typer options that several commands share, declared once.

A command that loads a model is declared with :func:`shared_options`: it writes only its own
options and receives a :class:`~topocli.cli.context.Context` as its first parameter; the shared
ones (``--model``, ``--device``, ``--dtype``, ``--batch-size``, ``--seed``, ``--out``,
``--overwrite``, ``--debug``, ``--quiet``, ``--trust-remote-code``, ``--allow-pickle``,
``--allow-outside``) are appended to its signature
for Typer, with the defaults the command asks for.
"""

from __future__ import annotations

import functools
import inspect
from pathlib import Path
from typing import Annotated, Any

import typer

from topocli.cli.context import Context, quiet_transformers

ModelOpt = Annotated[
    str | None,
    typer.Option(
        "--model",
        "-m",
        help="A shipped topographic model (minilm, smollm2-topo, efficientnet-lite0-topo, "
        "whisper-tiny-topo; NAME-control is its identity-adaptor control, minilm-control for "
        "minilm), a packaged backbone (`topo models`), a checkpoint or Hugging Face model "
        "folder, or a hub id from the local cache. Default: the shipped model of the stimuli's "
        "modality (text: minilm, images: efficientnet-lite0-topo, audio: whisper-tiny-topo).",
    ),
]
DeviceOpt = Annotated[str, typer.Option(help="auto | cpu | cuda | cuda:N")]
DtypeOpt = Annotated[str, typer.Option(help="float32 | bfloat16 | float16 (weights on GPU).")]
BatchOpt = Annotated[int, typer.Option("--batch-size", min=1, help="Stimuli per forward pass.")]
SeedOpt = Annotated[int, typer.Option(help="Seed for every random choice.")]
OutOpt = Annotated[Path | None, typer.Option("--out", "-o", help="Results folder to write.")]
OverwriteOpt = Annotated[bool, typer.Option(help="Replace a non-empty --out folder.")]
DebugOpt = Annotated[bool, typer.Option(help="Show tracebacks on errors.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or tables.")]
TrustOpt = Annotated[
    bool, typer.Option(help="Allow a model's own Python code to run (only if you trust it).")
]
AllowPickleOpt = Annotated[
    bool,
    typer.Option(
        help="Accept model weights stored as pickle (.bin / .pt) instead of safetensors; they "
        "are loaded with torch.load(weights_only=True) and the manifest says so."
    ),
]
RandomInitOpt = Annotated[
    int | None,
    typer.Option(
        "--random-init",
        min=0,
        metavar="SEED",
        help="An untrained control of --model: same architecture, areas and sheet, every weight "
        "re-initialised by the model's own init under SEED (identity adaptors for a checkpoint).",
    ),
]
AllowOutsideOpt = Annotated[
    bool,
    typer.Option(
        help="Let a stimulus CSV manifest name files outside its own folder (absolute paths "
        "or '..')."
    ),
]

# the options of a sheet-map analysis (localize and screen); the defaults are the command's
QOpt = Annotated[float | None, typer.Option("--q", help="BH-FDR threshold in (0, 1).")]
FdrScopeOpt = Annotated[
    str | None, typer.Option(help="sheet | area: BH over all units or within each area.")
]
FwhmOpt = Annotated[
    float | None, typer.Option(help="Smooth per-stimulus activations first (Gaussian FWHM, mm).")
]
AcrossAreasOpt = Annotated[
    bool, typer.Option(help="Smooth across area borders of the stacked sheet.")
]
MinClusterOpt = Annotated[int | None, typer.Option(help="Smallest cluster / island (units).")]
ConnectivityOpt = Annotated[int | None, typer.Option(help="4 | 8 grid connectivity.")]
PermutationsOpt = Annotated[int | None, typer.Option(help="Permutations for island Moran's I.")]
TopPercentOpt = Annotated[
    float | None, typer.Option(help="fROI size: top % of units per region (split-half).")
]
PoolingOpt = Annotated[str, typer.Option(help="mean | last token / frame pooling.")]
CacheOpt = Annotated[bool, typer.Option(help="Use the activation cache.")]

# an earlier results folder, passed the same way to every command that reads one
FromOpt = Annotated[
    Path | None,
    typer.Option("--from", help="An earlier topo results folder to start from."),
]


def split_list(values: list[str] | None) -> list[str]:
    """A list option's values: repeated (``--dose 1 --dose 5``) or comma-separated (``1,5``).

    Every list of names or numbers takes both forms; empty items are dropped.
    """
    return [item.strip() for v in values or [] for item in str(v).split(",") if item.strip()]


def localizer_default(key: str, unit: str = "") -> str:
    """'default: from the localizer (8 mm: emfl_text, ...; 4 mm: ...)' for an option's help."""
    from topocli.stimuli.library import shipped_thresholds

    by_value: dict[str, list[str]] = {}
    for name, table in shipped_thresholds().items():
        if key in table:
            value = table[key]
            shown = f"{value:g}{unit}" if isinstance(value, int | float) else str(value)
            by_value.setdefault(shown, []).append(name)
    listed = "; ".join(f"{v}: {', '.join(names)}" for v, names in by_value.items())
    return f"default: from the localizer ({listed})." if listed else "default: the localizer's."


# name -> (annotation, default); --debug is read by the entry point before parsing
_MODEL_OPTIONS: dict[str, tuple[Any, Any]] = {
    "model": (ModelOpt, None),
    "device": (DeviceOpt, "auto"),
    "dtype": (DtypeOpt, "float32"),
    "batch_size": (BatchOpt, 32),
    "seed": (SeedOpt, 0),
    "out": (OutOpt, None),
    "overwrite": (OverwriteOpt, False),
    "debug": (DebugOpt, False),
    "quiet": (QuietOpt, False),
    "trust_remote_code": (TrustOpt, False),
    "allow_pickle": (AllowPickleOpt, False),
    "random_init": (RandomInitOpt, None),
    "allow_outside": (AllowOutsideOpt, False),
}
_OUTPUT_OPTIONS = ("seed", "out", "overwrite", "debug", "quiet")


def shared_options(*, model: bool = True, seed: bool = True, **defaults: Any):
    """Decorator: append the shared options to a command and pass it a ``Context``.

    Parameters
    ----------
    model : bool
        The command loads a model (adds ``--model``, ``--device``, ``--dtype``,
        ``--batch-size``, ``--trust-remote-code``, ``--allow-pickle``, ``--allow-outside``,
        ``--random-init``);
        otherwise only the output options.
    seed : bool
        Add ``--seed`` (with ``model=False``).
    **defaults
        Other defaults for shared options, e.g. ``batch_size=128`` or ``device="cpu"``.
    """
    names = list(_MODEL_OPTIONS) if model else [n for n in _OUTPUT_OPTIONS if seed or n != "seed"]
    unknown = set(defaults) - set(names)
    if unknown:
        raise TypeError(f"no shared option {sorted(unknown)}")

    def decorate(command):
        own = list(inspect.signature(command, eval_str=True).parameters.values())[1:]
        shared = [
            inspect.Parameter(
                name,
                inspect.Parameter.KEYWORD_ONLY,
                default=defaults.get(name, _MODEL_OPTIONS[name][1]),
                annotation=_MODEL_OPTIONS[name][0],
            )
            for name in names
        ]
        params = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own] + shared

        @functools.wraps(command)
        def wrapper(**kwargs):
            given = {name: kwargs.pop(name) for name in names}
            given.pop("debug")
            if model:
                quiet_transformers()
            else:
                given.setdefault("device", "cpu")
            return command(Context(**given), **kwargs)

        del wrapper.__wrapped__  # Typer must see the new signature, not the command's
        wrapper.__signature__ = inspect.Signature(params)
        wrapper.__annotations__ = {p.name: p.annotation for p in params}
        return wrapper

    return decorate
