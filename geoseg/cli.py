"""The ``geoseg`` command line: run, validate, info, demo, train."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from geoseg.errors import GeosegError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Segment rasters far larger than memory on Dask clusters.")
console = Console(stderr=True)


def main() -> None:
    """Entry point that turns geoseg errors into a message and exit code 2."""
    try:
        code = app(standalone_mode=False)  # click returns the code of typer.Exit here
    except GeosegError as exc:
        console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
        sys.exit(2)
    except (typer.Exit, SystemExit) as exc:
        sys.exit(getattr(exc, "exit_code", getattr(exc, "code", 0)))
    except Exception as exc:  # click usage errors and the like
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        raise
    sys.exit(code if isinstance(code, int) else 0)


@app.command()
def run(
    job: Annotated[Path, typer.Argument(help="YAML job spec.")],
    scheduler: Annotated[str | None, typer.Option(help="Scheduler address, e.g. tcp://host:8786.")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing output.")] = False,
) -> None:
    """Run a job: read the input, segment it on the cluster, write the output store."""
    from geoseg.jobs import run as run_job

    with _progress() as progress:
        task = progress.add_task("segmenting", total=None)
        report = run_job(job, scheduler=scheduler, overwrite=overwrite,
                         on_start=lambda n: progress.update(task, total=n),
                         on_done=lambda _: progress.advance(task))
    _print_report(report)


@app.command()
def validate(job: Annotated[Path, typer.Argument(help="YAML job spec.")]) -> None:
    """Check a job spec, its input and its model without writing anything."""
    from geoseg.jobs import load_job, prepare

    prepared = prepare(load_job(job))
    src, model, work = prepared.source, prepared.model, prepared.work
    said = f"[green]ok[/]: {job}: input {src.format} {src.shape} {src.dtype}, {prepared.n_tasks} task(s), "
    if model is None:
        said += f"method {prepared.spec.model.method} (its statistics are fitted when the job runs)"
    else:
        kind = getattr(getattr(model, "info", None), "architecture", "classical method")
        said += f"model {model.name} ({kind}), tile {work.spec.tile}, halo {work.spec.halo}"
    console.print(said)


@app.command()
def status(url: Annotated[str, typer.Argument(help="Output URL a job wrote to.")]) -> None:
    """Show how far the run writing OUTPUT got (chunks done / total)."""
    from geoseg.jobs.status import output_status

    st = output_status(url)
    Console().print(f"{url}: {st.status}, {st.done}/{st.n_chunks} chunks done ({st.fraction:.0%}), "
                    f"model {st.model}")


@app.command()
def verify(url: Annotated[str, typer.Argument(help="Output URL a job wrote to.")]) -> None:
    """Check every chunk of OUTPUT exists and matches its recorded checksum; exit 1 if not."""
    from geoseg.jobs.status import verify_output

    report = verify_output(url)
    if report.ok:
        Console().print(f"ok: {report.checked} chunks match their checksums")
        return
    console.print(f"[red]{len(report.missing)} chunk(s) missing[/] {report.missing[:10]}, "
                  f"[red]{len(report.mismatched)} mismatched[/] {report.mismatched[:10]}")
    raise typer.Exit(1)


@app.command()
def info(
    url: Annotated[str, typer.Argument(help="Raster path or URL (Zarr or GeoTIFF).")],
    variable: Annotated[str | None, typer.Option(help="Array inside a Zarr group.")] = None,
) -> None:
    """Show a raster's shape, dtype, chunks, bands and georeferencing."""
    from geoseg.io.readers import open_source

    src = open_source(url, variable=variable)
    table = Table(show_header=False, box=None)
    rows: list[tuple[str, Any]] = [
        ("format", src.format), ("shape (band, y, x)", src.shape), ("dtype", src.dtype),
        ("chunks (y, x)", src.chunks), ("bands", ", ".join(src.band_names)),
        ("crs", _short_crs(src.georef.crs_wkt)), ("transform", src.georef.transform),
        ("nodata", src.georef.nodata),
    ]
    for key, value in rows:
        table.add_row(key, str(value))
    Console().print(table)


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Folder for the scene and the mask.")] = Path("demo-output"),
    size: Annotated[int, typer.Option(help="Scene height and width in pixels.")] = 4096,
    seed: Annotated[int, typer.Option(help="Scene seed.")] = 2026,
    overwrite: Annotated[bool, typer.Option(help="Replace earlier demo outputs.")] = False,
    scheduler: Annotated[str | None, typer.Option(help="Scheduler address (default: local cluster).")] = None,
) -> None:
    """Make a synthetic scene, segment it with the bundled model, report mIoU and speed."""
    from geoseg.demo import run_demo

    with _progress() as progress:
        task = progress.add_task("segmenting", total=None)
        result = run_demo(out, size=size, seed=seed, overwrite=overwrite, scheduler=scheduler,
                          on_start=lambda n: progress.update(task, total=n),
                          on_done=lambda _: progress.advance(task), log=console.print)
    _print_report(result.report)
    console.print(f"mIoU against ground truth: [bold]{result.miou:.3f}[/] "
                  f"(per class: {', '.join(f'{k} {v:.3f}' for k, v in result.per_class_iou.items())})")
    console.print(f"scene: {result.scene_url}\nmask:  {result.report.output_url}")


@app.command()
def train(
    out: Annotated[Path, typer.Option(help="Model file to write.")],
    steps: Annotated[int, typer.Option(help="Optimizer steps.")] = 1500,
    seed: Annotated[int, typer.Option(help="Seed of scenes, weights and sampling.")] = 0,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing model file.")] = False,
) -> None:
    """Train the demo U-Net on synthetic scenes (CPU-friendly; reproducible for a seed)."""
    from geoseg.models.train import TrainConfig, train_demo_model

    result = train_demo_model(TrainConfig(steps=steps, seed=seed), out, overwrite=overwrite,
                              log=console.print)
    console.print(f"wrote {out} (validation mIoU {result['val_miou']:.3f})")


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeRemainingColumn(), console=console, transient=False)


def _print_report(report: Any) -> None:
    resumed = f", {report.skipped} chunk(s) already done" if report.skipped else ""
    console.print(f"wrote {report.output_url}: {report.n_tasks} task(s){resumed}, "
                  f"{report.pixels / 1e6:.1f} Mpx in {report.seconds:.1f} s "
                  f"({report.mpx_per_s:.2f} Mpx/s end to end)")


def _short_crs(wkt: str | None) -> str:
    if not wkt:
        return "none"
    from rasterio.crs import CRS

    crs = CRS.from_wkt(wkt)
    return crs.to_string() if crs.to_epsg() else wkt[:80] + "..."


if __name__ == "__main__":
    main()
