"""The ``geoseg`` command line: run, validate, info, demo, train."""

from __future__ import annotations

import contextlib
import errno
import functools
import math
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any, Self

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from geoseg.core import redact
from geoseg.core.interrupts import (
    StoppedOnceComplete,
    Terminated,
    exit_status,
    exit_within,
    terminated_as_interrupt,
)
from geoseg.core.text import terminal_safe
from geoseg.core.urls import credentials_refused, public_url
from geoseg.errors import ClusterConfigError, GeosegError, StorageAccessError, StorageIOError


class _Commands(typer.Typer):
    """Typer whose commands say they were interrupted (Ctrl-C, or SIGTERM while :func:`main`
    runs) and exit 130 or 143: Typer itself turns the interrupt into a silent exit 130."""

    def command(self, *args: Any, **kwargs: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        register = super().command(*args, **kwargs)
        return lambda callback: register(_interruptible(callback))


def _interruptible(callback: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(callback)
    def interruptible(*args: Any, **kwargs: Any) -> Any:
        try:
            return callback(*args, **kwargs)
        except KeyboardInterrupt as exc:  # the clean-up (tasks, lease, status) ran on the way here
            _show_error(exc)
            raise typer.Exit(_interrupted_status(exc)) from None
    return interruptible


def _interrupted_status(interrupt: KeyboardInterrupt) -> int:
    """The exit status of an interrupted command, whose clean-up has run: it exits with it now,
    or at the latest :data:`~geoseg.core.interrupts.EXIT_GRACE` seconds from now."""
    code = exit_status(interrupt)
    exit_within(code)
    return code


app = _Commands(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                help="Segment rasters far larger than memory on Dask clusters.")
# soft_wrap: a message stays one line however long (a terminal wraps it on screen), so a path
# or URL in it is copied from a log or a CI job whole, not broken at 80 columns
# Messages hold what files and users name (paths, band and class names): no markup is read in
# them, so "[/]" prints as itself; a message styled on purpose says markup=True and escapes
# what it quotes.
console = Console(stderr=True, soft_wrap=True, markup=False)


def _stdout() -> Console:
    """A console on this moment's stdout, reading no markup (as :data:`console`)."""
    return Console(markup=False)


BAD_INPUT = (ValueError, LookupError, TypeError, ImportError, FileNotFoundError, FileExistsError,
             PermissionError)  # what a geoseg error refines when the user's input is at fault
_debug = {"on": False}


def main() -> None:
    """Entry point: one clean message per failure, exit 2 for bad input (a geoseg error refining
    ``ValueError``, ``FileNotFoundError``, ...), 1 for a failed run or an internal error; the
    traceback only with ``--debug``."""
    sys.unraisablehook = _unraisable
    try:
        with terminated_as_interrupt():  # SIGTERM cleans up as Ctrl-C does: leases, statuses
            code = app(standalone_mode=False)  # click returns the code of typer.Exit here
    except (typer.Exit, SystemExit) as exc:
        sys.exit(getattr(exc, "exit_code", getattr(exc, "code", 0)))
    except KeyboardInterrupt as exc:
        _show_error(exc)
        sys.exit(_interrupted_status(exc))
    except Exception as exc:  # noqa: BLE001 - every failure ends in one message; usage errors
        # (click's, vendored by typer) show themselves
        if callable(getattr(exc, "show", None)) and isinstance(getattr(exc, "exit_code", None), int):
            exc.show()
            sys.exit(exc.exit_code)
        typed = _typed(exc)
        _show_error(typed)
        sys.exit(exit_code(typed))
    sys.exit(code if isinstance(code, int) else 0)


def _unraisable(unraisable: Any) -> None:
    """An exception Python could not raise, logged at debug level instead of printed as a
    traceback after the command's own message: after a storage failure, reads the run gave up
    on (zarr's, through s3fs) are collected later, and their clean-up fails. With ``--debug``,
    Python's own report."""
    if _debug["on"]:
        sys.__unraisablehook__(unraisable)
        return
    with contextlib.suppress(Exception):  # at interpreter exit logging may be gone
        from geoseg import logs

        exc = unraisable.exc_value
        logs.log.debug("ignored in %s: %s: %s", redact.scrub(repr(unraisable.object))[:200],
                       type(exc).__name__, redact.scrub(str(exc)))


SYSTEM_FAULTS = frozenset({errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EDQUOT,
                           errno.EFBIG, errno.EIO, errno.ENAMETOOLONG})
WRITE_FAULTS = frozenset({errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


def _typed(exc: BaseException) -> BaseException:
    """A file system's refusal (read-only, permission denied, disk full) that escaped every
    conversion point, as the geoseg storage error it means; anything else unchanged."""
    if not isinstance(exc, OSError) or exc.errno not in SYSTEM_FAULTS:
        return exc
    from geoseg.io import remote

    if exc.filename is None:  # a write that names no file (a full disk, mostly)
        return StorageIOError(f"A write failed ({type(exc).__name__}: {exc}). To fix: free space "
                              "where this command writes (or raise the quota), check that it is "
                              "writable, or choose another location, then run again.")
    # a full disk or a read-only one is met by writing; permission denied or an I/O error may
    # be a read's as well
    what = "Writing" if exc.errno in WRITE_FAULTS else "Accessing"
    return remote.translate(exc, str(exc.filename), {}, what)


def exit_code(exc: BaseException) -> int:
    """2 when a geoseg error says the input is at fault, 1 for anything else that failed."""
    return 2 if isinstance(exc, GeosegError) and isinstance(exc, BAD_INPUT) else 1


def _show_error(exc: BaseException) -> None:
    """The error on stderr, secrets scrubbed: a red line, or one JSON log record with
    ``--log-format json``; with ``--debug``, the traceback before it. An error geoseg did not
    raise on purpose is an internal error."""

    if _debug["on"]:
        import traceback

        print(redact.scrub("".join(traceback.format_exception(exc))), file=sys.stderr)
    if isinstance(exc, GeosegError):
        message = str(exc) + _rerun_hint(exc)
    elif isinstance(exc, KeyboardInterrupt) and _command(sys.argv[1:]) == "export" and (
            written := getattr(exc, "output_url", getattr(exc, "written", None))):
        stopped = getattr(exc, "stopped", exc)  # an export's file whole, held or being said
        said = "terminated (SIGTERM)" if isinstance(stopped, Terminated) else "interrupted"
        message = f"wrote {public_url(written)}; {said} after it was complete"
    elif isinstance(exc, StoppedOnceComplete):
        said = "terminated (SIGTERM)" if isinstance(exc.stopped, Terminated) else "interrupted"
        again = f"; `geoseg report {exc.record_url}` writes it" if exc.record_url else ""
        message = (f"{said} after the run completed: output {public_url(exc.output_url)} is complete "
                   f"and its run recorded; its HTML report may be unwritten{again}"
                   + (f"; {exc.note}" if exc.note else ""))
    elif isinstance(exc, KeyboardInterrupt):
        said = "terminated (SIGTERM)" if isinstance(exc, Terminated) else "interrupted"
        message = f"{said}; {RESUMES.get(_command(sys.argv[1:]), 'run the command again to finish it')}"
    else:
        message = f"internal error: {type(exc).__name__}: {exc} (rerun with --debug for the traceback)"
    _say_error(message, exc)


def _say_error(message: str, exc: BaseException) -> None:
    """``message``, scrubbed of secrets, as one error line (or JSON record) on stderr."""
    from geoseg import logs

    message = redact.scrub(message)
    if logs.current_format() == "json":  # json.dumps escapes control characters itself
        logs.log.error(message, extra={"error": type(exc).__name__})
    else:
        console.print(f"[bold red]error:[/] {escape(terminal_safe(message))}", markup=True,
                      highlight=False)


RESUMES = {  # what a rerun of an interrupted command picks up
    "run": "a rerun resumes from the chunks already written",
    "batch": "a rerun skips the jobs done and resumes the others from the chunks already written",
    "train": "a rerun resumes from the run's last checkpoint (each epoch's end, and every "
             "training.checkpoint_steps steps)",
    "sweep": "a rerun skips the trials done and resumes the others from their last checkpoints",
    "convert": "the part-written output was removed; a rerun converts from the start",
}


def _rerun_hint(exc: GeosegError) -> str:
    """What a rerun of this command picks up, after a storage failure that running it again
    once fixed overcomes (a full disk, a failing mount)."""
    resumes = RESUMES.get(_command(sys.argv[1:]) or "")
    if not isinstance(exc, StorageIOError) or resumes is None:
        return ""
    return f" {resumes[0].upper()}{resumes[1:]}."


def _command(args: list[str]) -> str | None:
    """The geoseg command in ``args`` (the first word after the global options)."""
    words = iter(args)
    for word in words:
        if word == "--log-format":
            next(words, None)
        elif not word.startswith("-"):
            return word
    return None


def _no_credentials(param: typer.CallbackParam, value: str | None) -> str | None:
    """A URL a command reads, refused before anything is asked of its store when it carries
    credentials where the store cannot take them (``s3://KEY:SECRET@bucket/...``), as inputs and
    outputs are: the store would read them as part of the bucket name, and its error would show
    them. The message names the argument or option and shows the URL without them."""
    refused = None if value is None else credentials_refused(value, _named(param))
    if refused is not None:
        raise StorageAccessError(refused)
    return value


def _scheduler_address(ctx: typer.Context, value: str | None) -> str | None:
    """``--scheduler``: an address (or, as ``--cluster`` takes it, a kind), refused here naming
    the option: the commands apply it as a ``--cluster`` value, whose refusal named
    ``--cluster``, an option not given."""
    if value is None:
        return None
    from geoseg.parallel.cluster import ADDRESS, NAMED_KINDS

    if not ADDRESS.match(value) and value not in NAMED_KINDS:
        raise ClusterConfigError(
            f"--scheduler: received {value!r}; expected a Dask scheduler's address such as "
            "tcp://host:8786 or tls://host:8786 (dask scheduler prints it), or a kind of "
            f"cluster: {', '.join(NAMED_KINDS)}. {_without_scheduler(ctx)}")
    return value


def _without_scheduler(ctx: typer.Context) -> str:
    """What to give instead of an unusable ``--scheduler`` on this command."""
    if any(p.name == "cluster" for p in ctx.command.params):
        return "--cluster takes either too."
    return "Leave it out to start a local cluster."


def _named(param: typer.CallbackParam) -> str:
    """A parameter as the help names it: an argument in capitals (OUTPUT), an option by its
    flag (--dir)."""
    return param.opts[0] if param.param_type_name == "option" else str(param.name).upper()


@app.callback()
def _options(
    log_format: Annotated[str | None, typer.Option(
        "--log-format", help="text (default) or json: geoseg's log records as one JSON object per "
                             "line on stderr. Also GEOSEG_LOG_FORMAT.")] = None,
    debug: Annotated[bool, typer.Option(
        "--debug", help="On failure, show the traceback; keep Dask's worker-side records of "
                        "failed tasks.")] = False,
) -> None:
    """Segment rasters far larger than memory on Dask clusters."""
    from geoseg import logs

    _debug["on"] = debug
    logs.setup(log_format, quiet_tasks=not debug)


def _progress() -> Any:
    """A progress bar, or progress log records when the logs are JSON lines."""
    from geoseg import logs

    return logs.ProgressLog() if logs.current_format() == "json" else JobProgress()


@app.command()
def run(
    job: Annotated[Path, typer.Argument(help="YAML job spec.")],
    cluster: Annotated[str | None, typer.Option(
        help="local, threads, slurm, pbs, kubernetes or a scheduler address (tcp://host:8786); "
             "overrides the spec's cluster section.")] = None,
    scheduler: Annotated[str | None, typer.Option(help="Scheduler address, e.g. tcp://host:8786.",
                                                  callback=_scheduler_address)] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing output.")] = False,
) -> None:
    """Run a job: read the input, segment it on the cluster, write the output store."""
    from geoseg.jobs import load_job

    spec = load_job(job)  # a wrong spec is refused before the runner loads torch and dask
    from geoseg.jobs import run as run_job

    with _progress() as progress:
        report = run_job(spec, scheduler=scheduler, cluster=cluster, overwrite=overwrite,
                         on_start=progress.start, on_done=progress.done)
    with _completed(report.output_url, report.record_url):
        _print_report(report)
        _html_report(report.record_url, storage_options=spec.output.storage_options,
                     input_options=spec.input.storage_options)


@contextlib.contextmanager
def _completed(output_url: str, record_url: str | None) -> Iterator[None]:
    """An interrupt once the run is complete (while its report is drawn) says so, not that a
    rerun resumes: the output and its record are whole; only the HTML report may be missing."""
    try:
        yield
    except KeyboardInterrupt as exc:
        raise StoppedOnceComplete(exc, output_url, record_url) from None


@app.command()
def validate(job: Annotated[Path, typer.Argument(help="YAML job spec.")]) -> None:
    """Check a job spec, its input and its model without writing anything."""
    from geoseg.jobs import load_job

    spec = load_job(job)  # a wrong spec is refused before the runner loads torch and dask
    from geoseg.jobs import prepare
    from geoseg.jobs.checks import check_model_weights
    from geoseg.jobs.runner import existing_output, input_warnings
    from geoseg.jobs.tracking import check_tracking

    prepared = prepare(spec)
    check_model_weights(spec.model)
    tracked = check_tracking(spec)  # a missing mlflow or a tracking server that does not answer
    for text in input_warnings(prepared):
        console.print(f"[yellow]warning[/]: {escape(text)}", markup=True)
    found = existing_output(prepared)
    if found:
        console.print(f"note: {found}", highlight=False)
    if tracked:
        console.print(f"tracking: {tracked}", highlight=False)
    src, model, work = prepared.source, prepared.model, prepared.work
    said = f"{job}: input {src.format} {src.shape} {src.dtype}, {prepared.n_tasks} task(s), "
    spec_model = prepared.spec.model
    if model is None:
        what = f"method {spec_model.method}" if spec_model.method else "ensemble"
        said += f"{what} (its statistics are fitted when the job runs)"
    else:
        kind = getattr(getattr(model, "info", None), "architecture", None) or (
            "ensemble" if spec_model.ensemble else "test-time augmentation" if spec_model.tta
            else "classical method")
        said += f"model {model.name} ({kind}), tile {work.tiling.tile}, halo {work.tiling.halo}"
    console.print(f"[green]ok[/]: {escape(said)}", markup=True)


@app.command()
def status(url: Annotated[str, typer.Argument(help="Output URL a job wrote to.",
                                              callback=_no_credentials)]) -> None:
    """Show how far the run writing OUTPUT got (task regions done / total)."""
    from geoseg.jobs.status import output_status

    st = output_status(url)
    stages = "".join(f", {name} {state}" for name, state in st.stages.items())
    _stdout().print(f"{url}: {st.status}, {st.done}/{st.n_chunks} task regions done ({st.fraction:.0%}), "
                    f"model {st.model}{stages}")
    if st.status == "complete":  # what the run recorded; the chunks may have changed since
        _stdout().print(f"(from the run's record: `geoseg verify {url}` checks every chunk against "
                        "its checksum)", highlight=False)


@app.command()
def verify(url: Annotated[str, typer.Argument(help="Output URL a job wrote to.",
                                              callback=_no_credentials)],
           repair: Annotated[bool, typer.Option(
               "--repair", help="Mark the regions found damaged as not done, so that running the "
                                "job again (same spec, without --overwrite) recomputes them.")] = False,
           ) -> None:
    """Check every chunk of OUTPUT exists and matches its recorded checksum; exit 1 if not."""
    from geoseg.jobs.status import repair_output, verify_output

    if repair:
        _print_repair(url, repair_output(url))
        return
    report = verify_output(url)
    if report.ok:
        _stdout().print(f"ok: {report.checked} task regions match their checksums")
        return
    _print_problems(report)
    if report.not_done:
        console.print(f"{len(report.not_done)} of the missing task regions were never computed (the "
                      "output is unfinished): run the job again (the same spec, without --overwrite) "
                      "to finish it.", highlight=False)
    if set(report.bad_regions) - set(report.not_done):
        console.print(f"To fix: `geoseg verify {public_url(url)} --repair` marks them as not done, then "
                      "run the job again (the same spec, without --overwrite) to recompute them.",
                      highlight=False)
    elif report.stages:  # the chunks are sound: only a stage to redo
        command = (f"`geoseg instances {public_url(url)}` again with the same options, or "
                   if "instances" in report.stages else "")
        console.print(f"To fix: run {command}the job again (the same spec, without --overwrite): "
                      f"it redoes the {' and '.join(report.stages)} stage.", highlight=False)
    raise typer.Exit(1)


def _print_problems(report: Any) -> None:
    """What verify found: layout changes, then the regions missing, mismatched, undecodable."""
    for problem in report.layout:
        console.print(f"[red]layout:[/] {escape(problem)}", markup=True, highlight=False)
    said = [f"[red]{len(keys)} {what}[/] {escape(', '.join(map(report.where, keys[:10])))}"
            for keys, what in ((report.missing, "task region(s) missing"),
                               (report.mismatched, "mismatched"),
                               (report.undecodable, "undecodable")) if keys]
    if said:  # none when only the layout differs
        console.print("; ".join(said), markup=True, highlight=False)


def _print_repair(url: str, repaired: Any) -> None:
    """What ``verify --repair`` changed and what to run next; exit 1 if it could not repair."""
    report = repaired.verify
    if report.ok:
        _stdout().print(f"ok: {report.checked} task regions match their checksums; nothing to "
                        "repair, nothing was changed")
        return
    _print_problems(report)  # (repair_output refuses a changed layout before this)
    shown = ", ".join(map(report.where, repaired.unmarked[:10]))
    more = ", ..." if len(repaired.unmarked) > 10 else ""
    if repaired.unmarked:
        _stdout().print(f"un-marked {len(repaired.unmarked)} task region(s) in the manifest: "
                        f"{shown}{more}", highlight=False)
    if repaired.unrecorded:
        _stdout().print(f"{len(repaired.unrecorded)} task region(s) were not recorded as done; "
                        "they are computed too", highlight=False)
    for stage, problems in repaired.stages.items():
        again = "its job or `geoseg instances`" if stage == "instances" else "its job"
        _stdout().print(f"marked the {stage} stage damaged ({', '.join(problems[:10])}): it is made "
                        f"again when {again} runs again", highlight=False)
    if repaired.unmarked or repaired.unrecorded:
        _stdout().print("Run the job again (the same spec, without --overwrite) to recompute them.",
                        highlight=False)
    elif not repaired.changed:
        _stdout().print("Nothing was un-marked: none of it is recorded as done, so running the job "
                        "again (or `geoseg instances` for a stage) makes it anyway.", highlight=False)


@app.command()
def info(
    url: Annotated[str, typer.Argument(help="Raster path or URL (Zarr, GeoTIFF, ...), or a model "
                                            "file (.safetensors, builtin:NAME).")],
    variable: Annotated[str | None, typer.Option(help="Array inside a Zarr group.")] = None,
) -> None:
    """Show a raster's shape, dtype, chunks, bands and georeferencing, or a model's card."""
    from geoseg.io.readers import open_source
    from geoseg.models.card import is_model_url

    if is_model_url(url):
        _print_model_card(url)
        return
    src = open_source(url, variable=variable)
    table = Table(show_header=False, box=None)
    axes, geo = ", ".join(src.spatial_dims), src.georef
    rows: list[tuple[str, Any]] = [
        ("format", src.format), (f"shape (band, {axes})", src.shape), ("dtype", src.dtype),
        (f"chunks ({axes})", src.chunks), ("bands", ", ".join(src.band_names)),
    ]
    if geo.voxel_affine is not None:  # a volume: index (z, y, x) to world (x, y, z)
        rows += [("voxel affine", " | ".join(" ".join(f"{v:g}" for v in row)
                                             for row in geo.affine_matrix[:3])),
                 ("spacing (z, y, x)", tuple(round(s, 6) for s in geo.spacing)),
                 ("units", geo.units)]
        if geo.nifti_codes is not None:  # the spaces a NIfTI file's qform and sform are in
            rows.append(("NIfTI codes (qform, sform)", _xform_names(geo.nifti_codes)))
        if geo.nifti_qform is not None:  # the affine above is the sform's
            rows.append(("NIfTI qform (another matrix)", " | ".join(
                " ".join(f"{v:g}" for v in geo.nifti_qform[4 * r : 4 * r + 4]) for r in range(3))))
    else:
        rows += [("crs", _short_crs(geo.crs_wkt)), ("transform", geo.transform)]
    rows.append(("nodata", geo.nodata))
    for key, value in rows:
        table.add_row(key, terminal_safe(str(value)))
    _stdout().print(table)


def _xform_names(codes: tuple[int, int]) -> str:
    """NIfTI xform codes with their names, e.g. ``1 scanner, 4 mni``."""
    import nibabel as nib

    return ", ".join(f"{c} {nib.nifti1.xform_codes.label[c]}" for c in codes)


def _print_model_card(url: str) -> None:
    """A model's card: its facts, its classes with colour swatches, its training record."""
    from geoseg.models.card import model_card

    card = model_card(url)
    out = _stdout()
    facts = Table(show_header=False, box=None)
    for key, value in card.rows:
        facts.add_row(key, terminal_safe(value))
    out.print(facts)
    classes = Table("id", "class", "colour", box=None)
    for i, (name, (r, g, b)) in enumerate(card.classes):
        swatch = Text.assemble(("    ", f"on rgb({r},{g},{b})"), f" #{r:02x}{g:02x}{b:02x}")
        classes.add_row(str(i), terminal_safe(name), swatch)
    out.print(classes)
    if card.training:
        record = Table(show_header=False, box=None, title="training record", title_justify="left")
        for key, value in card.training:
            record.add_row(key, terminal_safe(value))
        out.print(record)


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Folder for the scene and the mask.")] = Path("demo-output"),
    size: Annotated[int, typer.Option(help="Scene height and width in pixels.")] = 4096,
    seed: Annotated[int, typer.Option(help="Scene seed.")] = 2026,
    overwrite: Annotated[bool, typer.Option(help="Replace earlier demo outputs.")] = False,
    scheduler: Annotated[str | None, typer.Option(help="Scheduler address (default: local cluster).",
                                                  callback=_scheduler_address)] = None,
) -> None:
    """Make a synthetic scene, segment it with the bundled model, report mIoU and speed."""
    from geoseg.demo import run_demo

    with JobProgress() as progress:
        result = run_demo(out, size=size, seed=seed, overwrite=overwrite, scheduler=scheduler,
                          on_start=progress.start, on_done=progress.done, log=console.print)
    _print_report(result.report)
    per_class = ", ".join(f"{k} {v:.3f}" for k, v in result.per_class_iou.items())
    console.print(f"mIoU against ground truth: [bold]{result.miou:.3f}[/] "
                  f"(per class: {escape(per_class)})", markup=True)
    for route, score in result.panoptic.items():
        console.print(f"buildings, {escape(route)}: panoptic quality [bold]{score['PQ']:.3f}[/] "
                      f"(SQ {score['SQ']:.3f}, RQ {score['RQ']:.3f})", markup=True)
    instances = result.instance_report.output_url if result.instance_report else "-"
    console.print(f"scene: {result.scene_url}\nmask:  {result.report.output_url}\n"
                  f"instances: {instances} (labels, instances.parquet, polygons.parquet, "
                  "polygons.geojson)")
    _html_report(result.report.record_url)
    if result.instance_report is not None:
        _html_report(result.instance_report.record_url)


@app.command()
def train(
    spec: Annotated[Path | None, typer.Argument(help="TRAIN.yaml (see jobs/train-demo.yaml).")] = None,
    out: Annotated[Path | None, typer.Option(help="Without SPEC: where to write the demo U-Net.")] = None,
    steps: Annotated[int | None, typer.Option(help="Without SPEC: optimizer steps of the demo "
                                                   "recipe (1500; 1200 with --instances).")] = None,
    seed: Annotated[int | None, typer.Option(help="Without SPEC: seed of scenes, weights and "
                                                  "sampling (0).")] = None,
    resume: Annotated[bool, typer.Option(help="Continue from the run's last checkpoint.")] = True,
    max_epochs: Annotated[int | None, typer.Option(help="Stop after this many epochs (resumable).")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing model / run.")] = False,
    instances: Annotated[bool, typer.Option(help="Without SPEC: re-train the instance model "
                                                 "(builtin:demo-instances) instead.")] = False,
) -> None:
    """Train a model from a spec (rasters read lazily), or the demo models on synthetic scenes."""
    _check_train_options(steps=steps, seed=seed, max_epochs=max_epochs)
    if spec is None:
        if out is None:
            raise typer.BadParameter("give a TRAIN.yaml, or --out FILE to re-train the demo U-Net")
        given = {k: v for k, v in (("steps", steps), ("seed", seed)) if v is not None}
        if instances:  # --steps and --seed were ignored here
            from geoseg.training.demo_instances import InstanceTrainConfig, train_instance_model

            figures = train_instance_model(InstanceTrainConfig(**given), out, overwrite=overwrite,
                                           log=console.print)
            console.print(f"wrote {out} (validation: {figures})", markup=False, highlight=False)
            return
        from geoseg.training.demo_unet import TrainConfig, train_demo_model

        result = train_demo_model(TrainConfig(**given), out, overwrite=overwrite,
                                  log=console.print)
        console.print(f"wrote {out} (validation mIoU {result['val_miou']:.3f})")
        return
    demo_only = next((name for name, value in (("--out", out), ("--instances", instances or None),
                                               ("--steps", steps), ("--seed", seed))
                      if value is not None), None)
    if demo_only is not None:  # --steps and --seed were ignored with a spec
        raise typer.BadParameter(f"received {spec} with {demo_only}, which is for the demo models "
                                 "without a SPEC; a spec sets its model file (output.model), its "
                                 "steps (training.steps_per_epoch, training.epochs) and its seed. "
                                 "Drop the option, or the SPEC.")
    from geoseg.training.spec import load_train_spec

    loaded = load_train_spec(spec)  # a wrong spec is refused before the trainer loads torch
    from geoseg.training import train as train_spec

    done = train_spec(loaded, resume=resume, overwrite=True if overwrite else None, max_epochs=max_epochs,
                      log=console.print)
    model = done.model_url or "not written yet (rerun the same command to continue)"
    console.print(f"{done.status}: model {model}, best validation mIoU {done.best_val_miou:.3f} "
                  f"(epoch {done.best_epoch}), run record {done.record_url}")


def _check_train_options(*, steps: int, seed: int, max_epochs: int | None) -> None:
    """Refuse, before any training, numbers out of range: fewer than one step or epoch, a seed
    the random generators do not take."""
    from geoseg.training.spec import MAX_SEED

    for option, value, low, high in (("--steps", steps, 1, math.inf), ("--seed", seed, 0, MAX_SEED),
                                     ("--max-epochs", max_epochs, 1, math.inf)):
        if value is not None and not low <= value <= high:
            allowed = f"of at least {low}" if high == math.inf else f"in {low}..{high}"
            raise typer.BadParameter(f"received {value}; expected an integer {allowed}",
                                     param_hint=f"'{option}'")


@app.command()
def sweep(
    spec: Annotated[Path, typer.Argument(help="SWEEP.yaml (see jobs/sweep-demo.yaml).")],
    scheduler: Annotated[str | None, typer.Option(help="Scheduler address (default: local cluster).",
                                                  callback=_scheduler_address)] = None,
    overwrite: Annotated[bool, typer.Option(help="Start every trial over.")] = False,
) -> None:
    """Run a grid or random search of training runs as tasks on the cluster; rank by validation mIoU."""
    from geoseg.training import sweep as run_sweep

    result = run_sweep(spec, scheduler=scheduler, overwrite=True if overwrite else None, log=console.print)
    print(result.table)
    console.print(f"best model: {result.best_model}")
    failed = [t.name for t in result.trials if t.status == "failed"]
    if failed:  # the others are ranked; a nightly script must still see the failure
        console.print(f"[red]{len(failed)} trial(s) failed[/]: {escape(', '.join(failed))}; a rerun "
                      "resumes them (their errors are in the table and sweep.json)", markup=True,
                      highlight=False)
        raise typer.Exit(1)


@app.command()
def batch(
    spec: Annotated[Path, typer.Argument(help="BATCH.yaml (see jobs/batch-demo.yaml).")],
    dry_run: Annotated[bool, typer.Option(help="Show what would run, skip or be replaced; "
                                               "write nothing.")] = False,
    cluster: Annotated[str | None, typer.Option(
        help="local, threads, slurm, pbs, kubernetes or a scheduler address (tcp://host:8786); "
             "overrides the spec's cluster section.")] = None,
    scheduler: Annotated[str | None, typer.Option(help="Scheduler address.",
                                                  callback=_scheduler_address)] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace outputs another job spec made.")] = False,
) -> None:
    """Run a job template over many inputs: skip the done, lease the running; 1 if any failed."""
    from geoseg.jobs.batch_spec import load_batch

    batch_spec = load_batch(spec)  # a wrong spec is refused before the runner loads torch and dask
    from geoseg.jobs.batch import run_batch

    try:
        report = run_batch(batch_spec, scheduler=scheduler, cluster=cluster,
                           overwrite=overwrite, dry_run=dry_run,
                           log=lambda said: console.print(said, markup=False, highlight=False))
    except KeyboardInterrupt as exc:  # before or after the jobs ran: no report to show
        console.print("interrupted; outputs written so far are kept, and running the batch again "
                      "resumes it", markup=False, highlight=False)
        raise typer.Exit(_interrupted_status(exc)) from None
    console.print(report.table())
    if report.url:
        console.print(f"report: {report.url}", markup=False, highlight=False)
    if report.url:  # an interrupted batch's report gets its index too: it says what is left
        _html_report(None, batch=report, storage_options=batch_spec.job.output.storage_options,
                     input_options=batch_spec.job.input.storage_options)
    if report.interrupted:
        _batch_interrupted(report)
    if report.failed:
        raise typer.Exit(1)


def _batch_interrupted(report: Any) -> None:
    """Say what an interrupted batch did and did not do (last, below its report and HTML index);
    exit 130 (Ctrl-C) or 143 (SIGTERM)."""
    said = ", ".join(f"{n} {k}" for k, n in report.totals.items() if n and k != "inputs")
    again = "" if report.dry_run else ("; running the batch again resumes it (finished outputs "
                                       "are skipped)")
    console.print(f"interrupted ({report.interrupted}): {said or 'nothing done'}{again}",
                  markup=False, highlight=False)
    raise typer.Exit(143 if report.interrupted == "SIGTERM" else 130)


@app.command()
def instances(
    mask: Annotated[str, typer.Argument(help="A finished geoseg output (OUT.zarr), or any "
                                             "single-band integer mask with --out.",
                                        callback=_no_credentials)],
    out: Annotated[str | None, typer.Option(help="For a mask geoseg did not write: the output "
                                                 "group to create.",
                                            callback=_no_credentials)] = None,
    method: Annotated[str, typer.Option(help="auto, components, watershed or decode.")] = "auto",
    classes: Annotated[str | None, typer.Option(help="Class names or ids that are objects, "
                                                     "e.g. building,2 (default: every class but nodata and "
                                                     "one named background).")] = None,
    connectivity: Annotated[int, typer.Option(help="1: faces only; 2 (3 in 3D): also edges "
                                                   "and corners.")] = 1,
    halo: Annotated[int | None, typer.Option(help="Pixels around each chunk a watershed sees: "
                                                  "default 32 (decode: 16), whatever the objects' "
                                                  "size; watershed needs the largest object's "
                                                  "extent, decode the boundary's thickness.")
                    ] = None,
    h: Annotated[float, typer.Option(help="watershed: depth of a distance maximum that seeds an "
                                          "object (not used by components).")] = 2.0,
    table: Annotated[bool, typer.Option(help="Write the object table.")] = True,
    polygons: Annotated[bool, typer.Option(help="Write polygons (images).")] = True,
    variable: Annotated[str | None, typer.Option(help="Array inside a Zarr group (with --out).")] = None,
    cluster: Annotated[str | None, typer.Option(help="local, slurm, pbs, kubernetes or a "
                                                     "scheduler address.")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing --out, or an output's "
                                                 "instances made with other settings.")] = False,
) -> None:
    """Label the objects of a mask: one id per object over the whole raster, a table, polygons."""
    from geoseg.instances.adopt import destination, label_mask
    from geoseg.instances.stage import InstanceSettings
    from geoseg.io.files import check_creatable
    from geoseg.jobs.lease import taken
    from geoseg.jobs.runner import LEASE_SECONDS
    from geoseg.parallel.cluster import connect

    names = None if classes is None else tuple(
        _id_or_name(c.strip()) for c in classes.split(",") if c.strip())
    settings = InstanceSettings(method, names, connectivity, halo, h, table, polygons)
    written = destination(mask, out)  # refused before a lease is taken beside a foreign mask
    if out is not None:
        check_creatable(out, "--out", store=True)
    # under the output's lease, as a run: never two writers at once, and a stage left
    # "running" by a command that died is told from one still running
    with taken(written, None, seconds=LEASE_SECONDS, refused="nothing was labelled. Wait for "
               "it (geoseg status shows it), or label another output."), connect(cluster), \
            _named_as_options(INSTANCE_OPTIONS):
        target, report = label_mask(mask, settings, out=out, variable=variable,
                                    overwrite=overwrite)
    console.print(f"{report.count} instance(s) in {target.url} ({report.seconds:.1f} s); files: "
                  f"{', '.join(report.files) or 'none'}", markup=False, highlight=False)


# the settings geoseg instances takes as options, by their job spec key (instances.KEY)
INSTANCE_OPTIONS = {"method": "--method", "classes": "--classes", "connectivity": "--connectivity",
                    "halo": "--halo", "h": "--h", "table": "--table", "polygons": "--polygons"}


@contextlib.contextmanager
def _named_as_options(options: dict[str, str]) -> Iterator[None]:
    """A refusal of a setting given as an option names the option typed (``--method``), not
    the job spec key it shares its checks with (``instances.method``)."""
    try:
        yield
    except GeosegError as exc:
        said = str(exc)
        key = said.partition(":")[0].removeprefix("instances.")
        if not said.startswith("instances.") or key not in options:
            raise
        raise type(exc)(f"{options[key]}{said[len('instances.') + len(key):]}") from None



def _id_or_name(text: str) -> int | str:
    """A class given as its id (digits) or its name."""
    from geoseg.core.text import whole_number

    number = whole_number(text)
    return text if number is None else number

@app.command()
def export(
    output: Annotated[str, typer.Argument(help="A finished output (OUT.zarr) a job wrote.",
                                          callback=_no_credentials)],
    cog: Annotated[str | None, typer.Option(help="Write the classes as a Cloud-Optimized GeoTIFF "
                                                 "here (images).",
                                            callback=_no_credentials)] = None,
    ome_zarr: Annotated[str | None, typer.Option(help="Write them as labels/NAME inside this "
                                                      "OME-Zarr image.",
                                                 callback=_no_credentials)] = None,
    name: Annotated[str, typer.Option(help="Label name for --ome-zarr.")] = "segmentation",
    nifti: Annotated[str | None, typer.Option(help="Write them as NIfTI (.nii or .nii.gz) here "
                                                   "(volumes).",
                                              callback=_no_credentials)] = None,
    resampling: Annotated[str, typer.Option(help="Coarser levels by mode or nearest (never "
                                                 "averaged).")] = "mode",
    blocksize: Annotated[int, typer.Option(help="COG tile size (a multiple of 16, 16 to 4096).")] = 512,
    compress: Annotated[str, typer.Option(help="COG compression (lossless: deflate, lzw, zstd, "
                                               "lzma, packbits, none).")] = "deflate",
    overwrite: Annotated[bool, typer.Option(help="Replace an existing file or label.")] = False,
) -> None:
    """Export a finished output as a COG, OME-Zarr labels and/or NIfTI."""
    from geoseg.io import exports

    if not (cog or ome_zarr or nifti):
        raise typer.BadParameter("give at least one of --cog FILE, --ome-zarr IMAGE, --nifti FILE")
    exports.check_exports(output, cog=cog, ome_zarr=ome_zarr, nifti=nifti, name=name,
                          overwrite=overwrite, blocksize=blocksize, compress=compress,
                          resampling=resampling)  # every one refused before any is written
    if cog:
        exports.export_cog(output, cog, overwrite=overwrite, blocksize=blocksize, compress=compress,
                           resampling=resampling)
        with _completed(cog, None):  # it is whole: a stop now says so
            console.print(f"wrote {cog}", markup=False, highlight=False)
    if ome_zarr:
        where = exports.export_ome_labels(output, ome_zarr, name=name, overwrite=overwrite,
                                          resampling=resampling)
        with _completed(where, None):
            console.print(f"wrote {where}", markup=False, highlight=False)
    if nifti:
        exports.export_nifti(output, nifti, overwrite=overwrite)
        with _completed(nifti, None):
            console.print(f"wrote {nifti}", markup=False, highlight=False)


@app.command()
def convert(
    source: Annotated[str, typer.Argument(help="Any raster geoseg reads, or a gzipped NIfTI.")],
    out: Annotated[str, typer.Argument(help="Zarr group to write (OUT.zarr).")],
    chunks: Annotated[str | None, typer.Option(
        help="Spatial chunk size: 512, or one per axis (64,128,128); default 512, 128 for volumes."
    )] = None,
    level: Annotated[int | None, typer.Option(help="Resolution level (COG overview, OME-Zarr "
                                                   "dataset); 0 is full resolution.")] = None,
    bands: Annotated[str | None, typer.Option(help="1-based bands to keep, e.g. 4,3,2.")] = None,
    variable: Annotated[str | None, typer.Option(help="Array inside a Zarr group.")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing output.")] = False,
) -> None:
    """Copy a raster into an analysis-ready chunked Zarr that keeps its georeference."""
    from geoseg.io.convert import convert as convert_raster

    sizes = _int_list(chunks, "--chunks")
    per_axis = sizes[0] if sizes and len(sizes) == 1 else sizes  # one value: every axis
    done = convert_raster(source, out, chunks=per_axis, level=level,
                          bands=_int_list(bands, "--bands"), variable=variable, overwrite=overwrite)
    console.print(f"wrote {done.url}: {done.input_format} {done.shape} {done.dtype}, "
                  f"chunks {done.chunks}", markup=False, highlight=False)


def _int_list(value: str | None, option: str, form: str = "") -> list[int] | None:
    """``"4,3,2"`` as ``[4, 3, 2]``; with a ``form`` (``"row0,row1,col0,col1"``), exactly as many."""
    return _numbers(value, option, int, form, "4,3,2")


def _float_list(value: str | None, option: str, form: str = "") -> list[float] | None:
    """``"1,2.5"`` as ``[1.0, 2.5]``; with a ``form`` (``"minx,miny,maxx,maxy"``), exactly as many."""
    return _numbers(value, option, float, form, "500000,4490000,510000,4500000")


def _numbers(value: str | None, option: str, kind: type, form: str, example: str) -> list | None:
    """The comma-separated numbers of an option, or a usage error naming it, what was received
    and the form expected."""
    if value is None:
        return None
    count = len(form.split(",")) if form else None
    try:
        numbers = [kind(v) for v in value.split(",") if v.strip()]
    except ValueError:
        numbers = None
    if numbers is not None and count in (None, len(numbers)) and (
            kind is int or all(map(math.isfinite, numbers))):
        return numbers
    what = "integers" if kind is int else "finite numbers"
    expected = f"{count} {what} separated by commas: {form}" if form else (
        f"{what} separated by commas, e.g. {example}")
    raise typer.BadParameter(f"{option}: received {value!r}; expected {expected}.")


class JobProgress:
    """A progress bar shown once the tasks are submitted: chunks done / total, elapsed time,
    Mpx/s and the time left at the mean pace so far (ETA)."""

    def __init__(self, out: Console | None = None) -> None:
        from geoseg.logs import Rate

        self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TimeElapsedColumn(), TextColumn("{task.fields[rate]}"),
                            console=out or console)
        self.task = self.bar.add_task("segmenting", total=None, rate="")
        self.rate = Rate()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar.live.is_started:  # a bar never shown leaves no empty line behind
            self.bar.stop()

    def start(self, n_tasks: int) -> None:
        self.rate.start(n_tasks)
        self.bar.reset(self.task, total=n_tasks)
        self.bar.start()

    def done(self, stats: Any) -> None:
        self.rate.add(stats.pixels)
        eta = self.rate.eta_s
        left = "" if eta is None else f", ETA {_clock(eta)}"
        self.bar.update(self.task, advance=1, rate=f"{self.rate.mpx_per_s:.2f} Mpx/s{left}")


def _clock(seconds: float) -> str:
    """``H:MM:SS``."""
    s = round(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def _print_report(report: Any) -> None:
    from geoseg import logs

    if logs.current_format() == "json":
        return  # the "job finished" log record says it all; stderr stays JSON lines
    resumed = f", {report.skipped} chunk(s) already done" if report.skipped else ""
    console.print(f"wrote {report.output_url}: {report.n_tasks} task(s){resumed}, "
                  f"{report.pixels / 1e6:.1f} Mpx in {report.seconds:.1f} s "
                  f"({report.mpx_per_s:.2f} Mpx/s end to end)")
    if getattr(report, "record_url", None):
        console.print(f"run record: {report.record_url}", markup=False, highlight=False)


def _short_crs(wkt: str | None) -> str:
    if not wkt:
        return "none"
    from rasterio.crs import CRS

    crs = CRS.from_wkt(wkt)
    return crs.to_string() if crs.to_epsg() else wkt[:80] + "..."


def _html_report(record_url: str | None, batch: Any = None,
                 storage_options: dict[str, Any] | None = None,
                 input_options: dict[str, Any] | None = None) -> None:
    """Write the HTML report of a run (beside its record) or a batch's index; say where. A
    report that cannot be written is a warning: the run itself is complete."""
    from geoseg import logs
    from geoseg.report.html import write_batch_index, write_report

    try:
        where = write_batch_index(batch, storage_options, input_options) if batch is not None else (
            write_report(record_url, storage_options=storage_options, input_options=input_options)
            if record_url else None)
    except Exception as exc:  # noqa: BLE001 - the output and its record stand without a report
        said = f"no HTML report ({type(exc).__name__}: {redact.scrub(str(exc)[:300])})"
        if logs.current_format() == "json":
            logs.log.warning(said)
        else:
            console.print(f"[yellow]warning:[/] {escape(said)}", markup=True)
        return
    if where and logs.current_format() == "json":  # stderr stays JSON lines
        logs.log.info("html report", extra={"report": where})
    elif where:
        console.print(f"html report: {where}", markup=False, highlight=False)


@app.command()
def report(
    run: Annotated[str, typer.Argument(help="A run record (.json in the runs folder) or an "
                                            "output a finished job wrote.",
                                       callback=_no_credentials)],
    out: Annotated[str | None, typer.Option(help="Where to write the page (default: beside "
                                                 "the run record, .html).",
                                            callback=_no_credentials)] = None,
    scores: Annotated[str | None, typer.Option(help="Scores from geoseg eval --json to show "
                                                    "instead of the run's own (a path or URL).",
                                               callback=_no_credentials)] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing file at --out (the page "
                                                 "beside the run record is always rewritten).")
                         ] = False,
) -> None:
    """Write a run's static HTML report: quicklook, metrics, confusion, chunk maps, provenance."""
    from geoseg.io.files import refuse_over_read, writable_file
    from geoseg.report.html import load_record, record_of, write_report

    if out is not None:
        writable_file(out, overwrite, "--out")
    found = _read_scores(scores) if scores is not None else None
    record_url = record_of(run)
    if out is not None:
        record = load_record(record_url)
        refuse_over_read(out, "--out", [
            (record_url, "run record"), (scores, "scores file"),
            ((record.get("output") or {}).get("url"), "run's output"),
            ((record.get("input") or {}).get("url"), "run's input")])
    if found is not None:
        _same_prediction(found, record_url, scores)
    where = write_report(record_url, out, found, quicklook_pixels=None)  # asked: drawn whatever its size
    console.print(f"html report: {where}", markup=False, highlight=False)


def _same_prediction(found: dict[str, Any], record_url: str, scores: str) -> None:
    """Refuse scores of another prediction than the run's output: the report would show them
    as the run's own."""
    from geoseg.errors import EvaluationError
    from geoseg.io.files import same_file
    from geoseg.report.html import load_record

    output = ((load_record(record_url) or {}).get("output") or {}).get("url")
    scored = found.get("prediction")
    if not output or not isinstance(scored, str):
        return
    if not same_file(scored, output):
        raise EvaluationError(
            f"--scores {public_url(scores)}: received the scores of prediction "
            f"{redact.scrub(scored)}, but "
            f"the run wrote {redact.scrub(output)}; expected scores of the run's own output. "
            f"Score it with geoseg eval {redact.scrub(output)} REF --json FILE.")


SCORE_KEYS = ("classes", "per_class", "confusion")  # what a report takes from geoseg eval's scores


def _read_scores(url: str) -> dict[str, Any]:
    """The scores ``geoseg eval --json`` wrote at ``url`` (a path or fsspec URL). Any other file
    is refused here, naming it and what is wrong, rather than failing somewhere in the report."""
    import json

    from geoseg.core import jsontext
    from geoseg.errors import EvaluationError, NestingError
    from geoseg.io.files import small_file
    from geoseg.report.eval import scores_problem

    shown = f"--scores {public_url(url)}"
    expected = "expected the JSON file geoseg eval PRED REF --json FILE writes"
    try:
        found = jsontext.loads(small_file(url, shown, EvaluationError,
                                          "Scores take a few KB: check the path.").decode("utf-8"))
    except OSError as exc:
        reason = exc.strerror or redact.scrub(str(exc)) or type(exc).__name__
        raise EvaluationError(f"{shown}: cannot read it ({reason}); {expected}.") from None
    except UnicodeDecodeError:
        raise EvaluationError(f"{shown}: received a file that is not UTF-8 text; "
                              f"{expected}.") from None
    except NestingError as exc:
        raise EvaluationError(f"{shown}: received JSON that {exc}; {expected}.") from None
    except json.JSONDecodeError as exc:
        raise EvaluationError(f"{shown}: received a file that is not JSON ({exc.msg} at "
                              f"line {exc.lineno}, column {exc.colno}); {expected}.") from None
    missing = [k for k in SCORE_KEYS if not isinstance(found, dict) or k not in found]
    if missing:
        what = "a JSON object" if isinstance(found, dict) else "JSON that is not an object, so"
        raise EvaluationError(f"{shown}: received {what} without {', '.join(missing)}; "
                              f"{expected}.")
    problem = scores_problem(found)
    if problem:
        raise EvaluationError(f"{shown}: received {problem}; {expected}.")
    return found


WINDOW, BBOX = "row0,row1,col0,col1", "minx,miny,maxx,maxy"  # what eval's region options hold


@app.command(name="eval")
def eval_command(
    pred: Annotated[str, typer.Argument(help="Predicted labels: a geoseg output or any "
                                             "single-band integer raster.",
                                        callback=_no_credentials)],
    ref: Annotated[str, typer.Argument(help="Reference labels on the same pixel grid.",
                                       callback=_no_credentials)],
    pred_variable: Annotated[str | None, typer.Option(help="Array in PRED (default: classes "
                                                           "of a geoseg output).")] = None,
    ref_variable: Annotated[str | None, typer.Option(help="Array in REF.")] = None,
    ignore: Annotated[str | None, typer.Option(help="Reference labels not scored, e.g. 0,255.")] = None,
    mapping: Annotated[str | None, typer.Option(
        "--map", help="Reference id=predicted id pairs when the label sets differ, e.g. "
                      "3=1,4=1 (default: by class name when both name them, else by id).")] = None,
    window: Annotated[str | None, typer.Option(help=f"Pixel window {WINDOW}.")] = None,
    bbox: Annotated[str | None, typer.Option(help=f"{BBOX} in the raster's CRS.")] = None,
    instances: Annotated[bool, typer.Option(help="Also match instances: PRED's 'instances' "
                                                 "against REF's --ref-instances.")] = False,
    ref_instances: Annotated[str, typer.Option(help="Instance array in REF.")] = "instances",
    json_out: Annotated[str | None, typer.Option("--json", help="Write the scores here (a new "
                                                             "file unless --overwrite).")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing file at --json.")] = False,
    min_miou: Annotated[float | None, typer.Option(min=0.0, max=1.0,
                                                   help="Exit 1 below this mIoU (0 to 1).")] = None,
    cluster: Annotated[str | None, typer.Option(help="local, slurm, pbs, kubernetes or a scheduler "
                                                     "address (default: threads here).")] = None,
) -> None:
    """Score PRED against REF chunk by chunk: IoU, Dice/F1, precision, recall, mIoU, (PQ)."""
    import contextlib
    import json

    from geoseg.io.files import refuse_over_read, writable_file, write_whole
    from geoseg.parallel.cluster import connect
    from geoseg.report.eval import evaluate, open_labels
    from geoseg.report.tables import instances_table, scores_table

    if json_out is not None:
        writable_file(json_out, overwrite, "--json")
        refuse_over_read(json_out, "--json", [(pred, "prediction"), (ref, "reference")])
    p, r = open_labels(pred, pred_variable), open_labels(ref, ref_variable)
    pairs = (open_labels(pred, "instances"), open_labels(ref, ref_instances)) if instances else None
    with connect(cluster) if cluster else contextlib.nullcontext():
        found = evaluate(p, r, ignore=_int_list(ignore, "--ignore") or (), mapping=_pairs(mapping),
                         window=_int_list(window, "--window", WINDOW),
                         bbox=_float_list(bbox, "--bbox", BBOX),
                         instances=pairs)
    found.update(prediction=public_url(pred), reference=public_url(ref))  # no credentials kept
    _stdout().print(scores_table(found))
    if "instances" in found:
        _stdout().print(instances_table(found["instances"]))
    if json_out is not None:
        write_whole(json_out, json.dumps(found, indent=1), what="Writing the scores")
    if min_miou is not None and found["miou"] is None:
        console.print(f"no class was scored, so there is no mIoU to hold to --min-miou {min_miou}",
                      markup=False, highlight=False)
        raise typer.Exit(1)
    if min_miou is not None and found["miou"] < min_miou:
        console.print(f"mIoU {found['miou']} is below --min-miou {min_miou}")
        raise typer.Exit(1)


def _pairs(value: str | None) -> dict[int, int] | None:
    """``"3=1,4=1"`` as ``{3: 1, 4: 1}``."""
    if value is None:
        return None
    try:
        pairs = [(int(a), int(b)) for a, b in (item.split("=") for item in value.split(",") if item)]
    except ValueError:
        pairs = None
    if pairs is None or not all(-(2**63) <= v < 2**63 for pair in pairs for v in pair):
        raise typer.BadParameter(f"--map: received {value!r}; expected reference=predicted id "
                                 "pairs (64-bit integers) separated by commas, e.g. 3=1,4=1")
    twice = next((a for a, n in Counter(a for a, _ in pairs).items() if n > 1), None)
    if twice is not None:
        raise typer.BadParameter(f"--map: received reference id {twice} twice in {value!r}; "
                                 "expected each reference id once, mapped to one predicted id.")
    return dict(pairs)



def _quicklook_size(value: int) -> int:
    """``--size``, refused past the longest side a quicklook draws
    (:data:`geoseg.report.quicklook.MAX_SIZE`): a larger one drew that size anyway, silently."""
    from geoseg.report.quicklook import MAX_SIZE

    if value > MAX_SIZE:
        raise typer.BadParameter(f"received {value}; expected at most {MAX_SIZE} pixels, the "
                                 f"longest side a quicklook draws. Give --size {MAX_SIZE} or "
                                 "less (geoseg export --cog writes the mask at full resolution).")
    return value


@app.command()
def quicklook(
    output: Annotated[str, typer.Argument(help="An output a job wrote (OUT.zarr).",
                                          callback=_no_credentials)],
    png: Annotated[str, typer.Argument(help="PNG file to write: a path, or a URL (s3://...) "
                                            "outside OUTPUT.")],
    image: Annotated[str | None, typer.Option(help="Raster to draw under the mask (default: "
                                                   "the run's input).",
                                              callback=_no_credentials)] = None,
    variable: Annotated[str | None, typer.Option(help="Array inside --image's Zarr group.")] = None,
    bands: Annotated[str | None, typer.Option(help="1-based bands shown as red, green, blue, "
                                                   "e.g. 4,3,2 (default: the first three).")] = None,
    size: Annotated[int, typer.Option(min=8, callback=_quicklook_size,
                                      help="Longest side of the mask in the picture, in pixels, "
                                           "8 to 2048 (title and legend come on top).")] = 1024,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing file at PNG.")] = False,
) -> None:
    """A small picture of an output: its classes over the input's bands, read with a stride."""
    from geoseg.io.files import new_file
    from geoseg.report.quicklook import write_quicklook

    new_file(png, overwrite)  # where outputs may go (geoseg.io.allow): a URL stays a URL
    look = write_quicklook(output, png, image_url=image, variable=variable,
                           bands=_int_list(bands, "--bands"), size=size)
    if look.note:
        console.print(f"[yellow]warning[/]: {escape(look.note)}", markup=True, highlight=False)
    console.print(f"wrote {public_url(png)}", markup=False, highlight=False)


runs_app = _Commands(help="List the runs folder's runs; compare two of them.",
                       no_args_is_help=False)
app.add_typer(runs_app, name="runs")
RunsDir = Annotated[str | None, typer.Option("--dir", help="Runs folder (default: "
                                                           "GEOSEG_RUNS_DIR, else where runs "
                                                           "write by default).",
                                             callback=_no_credentials)]


@runs_app.callback(invoke_without_command=True)
def runs(
    ctx: typer.Context,
    folder: RunsDir = None,
    html: Annotated[str | None, typer.Option(help="Also write an index page here linking "
                                                  "each run's report.")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing file at --html.")] = False,
) -> None:
    """Every run of the runs folder: model, data, the settings that differ, mIoU, throughput."""
    ctx.obj = {"dir": folder}  # the group's --dir holds for compare too
    if ctx.invoked_subcommand is not None:
        return
    from geoseg.io.files import refuse_over_read, writable_file
    from geoseg.report.html import report_path, write_index
    from geoseg.report.runs import list_runs, runs_table

    if html:
        writable_file(html, overwrite, "--html")
    found = list_runs(folder)
    if html:
        refuse_over_read(html, "--html", [(where, "run record") for where, _ in found])
    _stdout().print(runs_table(found))
    if html:
        import fsspec

        rows = [(f"{r['job'].get('name')} {r.get('started', '')}", r,
                 report_path(w) if fsspec.core.url_to_fs(report_path(w))[0].exists(report_path(w))
                 else None) for w, r in found]
        console.print(f"index: {write_index(rows, html, 'geoseg runs')}", markup=False,
                      highlight=False)


@runs_app.command("compare")
def runs_compare(
    a: Annotated[str, typer.Argument(help="A run: record path, number from geoseg runs, or part "
                                          "of its file name.")],
    b: Annotated[str, typer.Argument(help="The other run.")],
    ctx: typer.Context,
    folder: RunsDir = None,
) -> None:
    """Every field two run records disagree on: settings, model, data, scores, speed."""
    from geoseg.report.runs import compare_table, find_run

    if folder is None and isinstance(ctx.obj, dict):
        folder = ctx.obj.get("dir")

    _stdout().print(compare_table(find_run(a, folder), find_run(b, folder)))


if __name__ == "__main__":
    main()
