"""Repairing an output whose chunks changed after its run: ``geoseg verify --repair`` un-marks
the damaged regions, a rerun recomputes exactly those; ``geoseg status`` notices deleted chunks.
An output whose array metadata changed since (an edited zarr.json) is named as such, and
neither enumerated nor repaired."""

from __future__ import annotations

import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
import zarr

from geoseg.errors import BudgetError, CorruptOutputError
from geoseg.io.integrity import lost_from_complete
from geoseg.io.output import OutputTarget
from geoseg.jobs import JobSpec, run
from geoseg.jobs.lease import Lease
from geoseg.jobs.status import output_status, repair_output, verify_output
from tests.cli import WIDE, geoseg
from tests.conftest import textured_image, write_zarr


def threshold_job(folder: Path) -> tuple[Path, Path]:
    """A finished 96 x 96 threshold job in 32-pixel chunks (9 task regions), run through the
    CLI on threads; (its spec file, its output)."""
    write_zarr(folder / "in.zarr", textured_image(96, 96, bands=1, seed=3), chunks=(32, 32))
    out = folder / "out.zarr"
    spec = folder / "job.yaml"
    spec.write_text(yaml.safe_dump({
        "input": {"url": str(folder / "in.zarr")},
        "model": {"method": "threshold", "params": {"thresholds": [128]}},
        "output": {"url": str(out), "chunks": [32, 32]}}))
    ran = geoseg("run", str(spec), "--scheduler", "threads")
    assert ran.returncode == 0, ran.stderr
    return spec, out


def classes(out: Path) -> np.ndarray:
    return zarr.open_group(str(out), mode="r")["classes"][:]


def files(out: Path) -> dict[str, str]:
    """Every file of the output folder and the sha256 of its bytes."""
    return {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(out.rglob("*")) if p.is_file()}


def flat(text: str) -> str:
    return " ".join(text.split())


def declare(out: Path, array: str = "classes", **changes: Any) -> None:
    """Edit the metadata of ``array`` in ``out`` as a user could, in its own zarr.json and in the
    group's consolidated copy: ``shape=[...]``, or ``chunks=[...]`` (the regular grid's)."""
    for meta in (out / "zarr.json", out / array / "zarr.json"):
        doc = json.loads(meta.read_text())
        node = doc["consolidated_metadata"]["metadata"][array] if meta.parent == out else doc
        if "shape" in changes:
            node["shape"] = changes["shape"]
        if "chunks" in changes:
            node["chunk_grid"]["configuration"]["chunk_shape"] = changes["chunks"]
        meta.write_text(json.dumps(doc))


MEMORY = 2 * 2**30  # address space a bounded command gets: imports take about 1 GiB of it


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY, MEMORY))


def bounded(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """``geoseg ARGS`` in a process of its own, within :data:`MEMORY` and two minutes."""
    return subprocess.run([sys.executable, "-m", "geoseg.cli", *args], check=False,
                          capture_output=True, text=True, timeout=120, cwd=cwd,
                          env={**os.environ, **WIDE}, preexec_fn=_limit_memory)


def test_verify_repair_then_a_rerun_recomputes_exactly_the_damaged_regions(tmp_path):
    spec, out = threshold_job(tmp_path)
    whole = classes(out)  # the uninterrupted run's output: the reference
    chunk = out / "classes" / "c"
    flipped = bytearray((chunk / "0" / "0").read_bytes())
    flipped[len(flipped) // 2] ^= 0xFF
    (chunk / "0" / "0").write_bytes(bytes(flipped))
    assert (chunk / "1" / "1").read_bytes() != (chunk / "1" / "2").read_bytes()
    shutil.copyfile(chunk / "1" / "1", chunk / "1" / "2")  # a neighbour's chunk in its place
    (chunk / "2" / "0").write_bytes(b"\x00garbage")  # bytes that do not decode

    found = geoseg("verify", str(out))
    assert found.returncode == 1
    said = flat(found.stderr)
    assert "1.2 [32:64, 64:96]" in said and "2.0 [64:96, 0:32]" in said and "0.0 [0:32, 0:32]" in said
    assert "missing" not in said  # no empty category named
    assert said.endswith("run the job again (the same spec, without --overwrite) to recompute them.")
    assert "--repair" in said

    repaired = geoseg("verify", str(out), "--repair")
    assert repaired.returncode == 0, repaired.stderr
    told = flat(repaired.stdout)
    assert "un-marked 3 task region(s)" in told and "Run the job again" in told
    for key in ("0.0", "1.2", "2.0"):
        assert key in told
    manifest = zarr.open_group(str(out), mode="r")["manifest_done"][...]
    assert [".".join(map(str, i)) for i in np.argwhere(~manifest)] == ["0.0", "1.2", "2.0"]
    state = output_status(str(out))
    assert state.status.startswith("incomplete") and state.done == 6 and state.n_chunks == 9
    shown = flat(geoseg("status", str(out)).stdout)
    assert "incomplete" in shown and "6/9 task regions done" in shown

    again = geoseg("run", str(spec), "--scheduler", "threads")
    assert again.returncode == 0, again.stderr
    assert "resuming: 6 of 9 chunk(s) already done" in flat(again.stderr + again.stdout)
    assert geoseg("verify", str(out)).returncode == 0
    np.testing.assert_array_equal(classes(out), whole)
    assert output_status(str(out)).status == "complete"


def test_repair_of_an_intact_output_changes_nothing_and_says_so(tmp_path):
    _, out = threshold_job(tmp_path)
    before = files(out)
    said = geoseg("verify", str(out), "--repair")
    assert said.returncode == 0
    assert "nothing to repair, nothing was changed" in flat(said.stdout)
    assert files(out) == before
    assert not Path(str(out) + ".lease").exists()  # the lease taken for the repair is given back


def test_repair_of_an_output_a_run_is_writing_is_refused_and_changes_nothing(tmp_path):
    _, out = threshold_job(tmp_path)
    (out / "classes" / "c" / "0" / "0").unlink()
    before = files(out)
    other = Lease(str(out), owner="another-host-4242-abcdef", seconds=60)
    assert other.acquire()
    try:
        said = geoseg("verify", str(out), "--repair")
    finally:
        other.release()
    assert said.returncode == 1, said.stderr
    assert "Another run is writing" in flat(said.stderr)
    assert "another-host-4242-abcdef" in flat(said.stderr)
    assert "nothing was repaired" in flat(said.stderr) and "Traceback" not in said.stderr
    assert files(out) == before
    assert output_status(str(out)).status.startswith("complete per its record")  # not un-marked


def test_status_names_a_region_whose_stored_chunk_was_deleted(tmp_path):
    _, out = threshold_job(tmp_path)
    (out / "classes" / "c" / "1" / "2").unlink()
    state = output_status(str(out))
    assert state.status.startswith("complete per its record, but 1 task region(s) lost stored "
                                   "chunks since (1.2): run the job again")
    shown = flat(geoseg("status", str(out)).stdout)
    assert "lost stored chunks since (1.2)" in shown
    assert not verify_output(str(out)).ok  # what status said agrees with the full check


@pytest.mark.parametrize("damage", ["relabelled", "undecodable"])
def test_repair_marks_a_damaged_stage_so_its_next_run_redoes_it(tmp_path, damage):
    """Instance labels changed in place, or a chunk of them that no longer decodes: the stage is
    marked damaged (classes left recorded) and the next run of the job labels again, after which
    verify passes."""
    write_zarr(tmp_path / "in.zarr", textured_image(64, 64, bands=1, seed=2), chunks=(32, 32))
    spec = JobSpec.from_dict({
        "input": {"url": str(tmp_path / "in.zarr")},
        "model": {"method": "threshold", "params": {"thresholds": [128]}},
        "output": {"url": str(tmp_path / "out.zarr"), "chunks": [32, 32]},
        "instances": {"classes": [1]}})
    run(spec, scheduler="threads")
    group = zarr.open_group(str(tmp_path / "out.zarr"), mode="r+")
    labels = group["instances"][:]
    if damage == "relabelled":
        block = labels[:32, :32].copy()
        block[block > 0] += 1
        group["instances"][:32, :32] = block
    else:
        (tmp_path / "out.zarr" / "instances" / "c" / "0" / "0").write_bytes(b"\x00garbage")
    found = geoseg("verify", str(tmp_path / "out.zarr"))
    said = " ".join(found.stderr.split())
    assert found.returncode == 1 and "internal error" not in said, said
    assert ("instances:0.0" + (" (undecodable)" if damage == "undecodable" else "")) in said, said

    repaired = repair_output(str(tmp_path / "out.zarr"))
    assert repaired.unmarked == [] and list(repaired.stages) == ["instances"]
    assert repaired.stages["instances"][0].startswith("instances:0.0")
    state = output_status(str(tmp_path / "out.zarr"))
    assert state.status == "complete" and state.stages == {"instances": "damaged"}
    again = run(spec, scheduler="threads")
    assert not again.instances.skipped and again.skipped == 4
    assert verify_output(str(tmp_path / "out.zarr")).ok
    np.testing.assert_array_equal(zarr.open_group(str(tmp_path / "out.zarr"))["instances"][:],
                                  labels)


@pytest.mark.parametrize("array", ["instances", "manifest_instances_sha256"])
def test_a_stage_array_edited_to_millions_of_chunks_is_named_in_bounded_memory(tmp_path, array):
    """verify read the stage's sha256 array whole at whatever shape its zarr.json declared."""
    write_zarr(tmp_path / "in.zarr", textured_image(64, 64, bands=1, seed=1), chunks=(32, 32))
    spec = tmp_path / "job.yaml"
    spec.write_text(yaml.safe_dump({
        "input": {"url": str(tmp_path / "in.zarr")},
        "model": {"method": "threshold", "params": {"thresholds": [128]}},
        "output": {"url": str(tmp_path / "out.zarr"), "chunks": [32, 32]},
        "instances": {"classes": [1]}}))
    assert geoseg("run", str(spec), "--scheduler", "threads").returncode == 0
    out = tmp_path / "out.zarr"
    declare(out, array, shape=[4000000, 4000000] + ([32] if array.endswith("sha256") else []))
    before = files(out)
    said = bounded("verify", str(out), cwd=tmp_path)
    told = flat(said.stderr + said.stdout)
    assert said.returncode == 1 and "Traceback" not in said.stderr, told
    assert "instances (its metadata was changed: shape" in told and "restore its zarr.json" in told
    assert files(out) == before


def test_a_shard_at_the_edge_that_no_longer_decodes_is_recomputed_after_repair(tmp_path):
    """A write into a shard the array's edge cuts merges into the stored shard: repair deletes
    the undecodable one, or the rerun would fail reading it."""
    write_zarr(tmp_path / "in.zarr", textured_image(80, 80, bands=1, seed=2), chunks=(32, 32))
    out = tmp_path / "out.zarr"
    spec = JobSpec.from_dict({
        "input": {"url": str(tmp_path / "in.zarr")},
        "model": {"method": "threshold", "params": {"thresholds": [128]}},
        "output": {"url": str(out), "chunks": [32, 32], "shards": [64, 64],
                   "probabilities": True}})
    run(spec, scheduler="threads")
    whole = classes(out)
    (out / "classes" / "c" / "1" / "1").write_bytes(b"garbage")
    assert verify_output(str(out)).undecodable == ["1.1"]
    repaired = repair_output(str(out))
    assert repaired.unmarked == ["1.1"] and repaired.status == "repaired"
    assert not (out / "classes" / "c" / "1" / "1").exists()
    again = run(spec, scheduler="threads")
    assert again.skipped == 3 and again.n_tasks == 1
    assert verify_output(str(out)).ok
    np.testing.assert_array_equal(classes(out), whole)


@pytest.mark.parametrize("command", [["status"], ["export", "--cog", "x.tif"],
                                     ["verify", "--repair"]])
def test_a_shape_edited_to_millions_of_regions_is_named_at_once_not_enumerated(tmp_path, command):
    """A zarr.json declaring 4e6 x 4e6 pixels (1.5625e10 task regions where the run planned 9):
    each command names the change and exits 2, in bounded memory, instead of listing that grid."""
    _, out = threshold_job(tmp_path)
    declare(out, shape=[4000000, 4000000])
    before = files(out)
    said = bounded(command[0], str(out), *command[1:], cwd=tmp_path)
    told = flat(said.stderr)
    assert said.returncode == 2, told
    assert "Traceback" not in said.stderr and "internal error" not in told
    assert ("classes: its metadata declares shape (4000000, 4000000), a grid of 15625000000 task "
            "region(s), but the run planned 9 (shape (96, 96))") in told
    assert "restore the zarr.json" in told and "run the job again with --overwrite" in told
    assert files(out) == before and not (tmp_path / "x.tif").exists()


def test_repair_after_a_chunk_shape_edit_deletes_nothing_and_names_the_change(tmp_path):
    """Chunks of 16 declared where the run wrote 32: not 9 damaged regions, but metadata that
    changed. verify says so; --repair refuses (exit 2) and every stored byte is kept."""
    _, out = threshold_job(tmp_path)
    declare(out, chunks=[16, 16])
    before = files(out)
    assert sum(name.startswith("classes/c/") for name in before) == 9
    change = "classes: its metadata declares chunks [16, 16], but the run wrote chunks [32, 32]"

    found = geoseg("verify", str(out))
    said = flat(found.stderr)
    assert found.returncode == 1 and change in said and "restore the zarr.json" in said
    assert "missing" not in said and "undecodable" not in said and "--repair" not in said
    repaired = geoseg("verify", str(out), "--repair")
    said = flat(repaired.stderr)
    assert repaired.returncode == 2 and "Traceback" not in repaired.stderr, said
    assert change in said and "nothing was repaired (no chunk deleted" in said
    assert "run the job again with --overwrite" in said and "un-marked" not in repaired.stdout
    assert files(out) == before  # every chunk, the manifest and the metadata byte-identical
    assert not Path(str(out) + ".lease").exists()
    shown = geoseg("status", str(out))
    said = flat(shown.stderr)
    assert shown.returncode == 2 and change in said and "verify --repair" not in said
    with pytest.raises(CorruptOutputError, match="nothing was repaired"):
        repair_output(str(out))
    assert files(out) == before


def test_a_rerun_after_a_shape_edit_is_refused_leaving_the_output_as_it_was(tmp_path):
    """It was refused after marking the output running again (status then said interrupted)."""
    spec, out = threshold_job(tmp_path)
    declare(out, shape=[4000000, 4000000])
    before = files(out)
    again = geoseg("run", str(spec), "--scheduler", "threads")
    said = flat(again.stderr)
    assert again.returncode == 2 and "restore the zarr.json" in said, said
    assert files(out) == before and not Path(str(out) + ".lease").exists()


def test_the_cheap_integrity_check_lists_no_more_regions_than_the_task_budget(tmp_path,
                                                                             monkeypatch):
    """The listing status and exports make is bounded by GEOSEG_MAX_TASKS, as verify is."""
    _, out = threshold_job(tmp_path)
    (out / "classes" / "c" / "1" / "2").unlink()
    assert lost_from_complete(OutputTarget(str(out))) == ["1.2"]
    monkeypatch.setenv("GEOSEG_MAX_TASKS", "8")
    with pytest.raises(BudgetError, match=r"has 9 tasks .*the limit is 8 \(GEOSEG_MAX_TASKS\)"):
        lost_from_complete(OutputTarget(str(out)))


class _Stop(KeyboardInterrupt):
    """Ctrl-C once the first task region is written."""


def test_a_chunk_edit_of_an_unfinished_output_is_named_before_its_run_recorded_anything(
        tmp_path):
    """Chunks of 16 declared in an interrupted output's zarr.json still divide its 32-pixel task
    regions, and no run record exists yet: the layout kept at creation tells the edit from
    damage, so --repair deletes nothing."""
    write_zarr(tmp_path / "in.zarr", textured_image(96, 96, bands=1, seed=3), chunks=(32, 32))
    out = tmp_path / "out.zarr"
    spec = JobSpec.from_dict({"input": {"url": str(tmp_path / "in.zarr")},
                              "model": {"method": "threshold", "params": {"thresholds": [128]}},
                              "output": {"url": str(out), "chunks": [32, 32]}})

    def stop(_stats: object) -> None:
        raise _Stop

    with pytest.raises(_Stop):
        run(spec, scheduler="threads", on_done=stop)
    assert output_status(str(out)).status.startswith("interrupted")
    declare(out, chunks=[16, 16])
    before = files(out)
    change = "classes: its metadata declares chunks [16, 16], but the run wrote chunks [32, 32]"
    repaired = geoseg("verify", str(out), "--repair")
    said = flat(repaired.stderr)
    assert repaired.returncode == 2 and change in said, said
    assert files(out) == before


def test_an_output_that_lost_its_classes_array_is_named_not_an_internal_error(tmp_path):
    """A deleted classes/ folder (a partial copy): status called it complete and told to rerun,
    and the rerun, verify --repair and the rerun after it all ended in an internal KeyError."""
    spec, out = threshold_job(tmp_path)
    shutil.rmtree(out / "classes")
    said = "has lost its classes array(s) (their zarr.json is gone"
    for command in (["status", str(out)], ["verify", str(out), "--repair"],
                    ["run", str(spec), "--scheduler", "threads"]):
        result = geoseg(*command)
        told = flat(result.stderr)
        assert result.returncode == 2 and said in told and "internal error" not in told, told
    assert "run the job again with --overwrite" in told
    again = geoseg("run", str(spec), "--scheduler", "threads", "--overwrite")
    assert again.returncode == 0, again.stderr


GARBAGE = bytes(range(7, 107))  # 100 bytes no codec decodes


@pytest.mark.parametrize(("entry", "damage"), [("manifest_done/c/0/1", GARBAGE),
                                               ("manifest_sha256/c/0/1/0", GARBAGE),
                                               ("manifest_done/c/0/1", b"")],
                         ids=["done-garbage", "sha256-garbage", "done-empty"])
def test_a_manifest_entry_that_no_longer_decodes_is_named_and_repaired(tmp_path, entry, damage):
    """Garbage (or nothing) in a manifest entry's stored chunk made verify and verify --repair
    end in an internal zstd error, so nothing could be repaired: the region is named as
    undecodable, --repair un-marks it, and the rerun recomputes it."""
    spec, out = threshold_job(tmp_path)
    whole = classes(out)
    (out / entry).write_bytes(damage)

    found = geoseg("verify", str(out))
    said = flat(found.stderr)
    assert found.returncode == 1 and "internal error" not in said, said
    assert "0.1 [0:32, 32:64]" in said and "--repair" in said, said

    repaired = geoseg("verify", str(out), "--repair")
    told = flat(repaired.stdout)
    assert repaired.returncode == 0, repaired.stderr
    assert "un-marked 1 task region(s)" in told and "0.1" in told, told
    assert "0.1" not in OutputTarget(str(out)).done_keys()
    assert output_status(str(out)).status.startswith("incomplete")

    again = geoseg("run", str(spec), "--scheduler", "threads")
    assert again.returncode == 0, again.stderr
    assert "resuming: 8 of 9 chunk(s) already done" in flat(again.stderr + again.stdout)
    assert geoseg("verify", str(out)).returncode == 0
    np.testing.assert_array_equal(classes(out), whole)


@pytest.mark.filterwarnings("ignore:Consolidated metadata")
@pytest.mark.parametrize("array", ["classes", "manifest_done", "manifest_sha256"])
def test_an_array_deleted_while_a_run_writes_it_is_named_not_an_internal_key_error(tmp_path,
                                                                                  array):
    """An output array deleted mid-run ended the run in an internal KeyError (zarr's, for the
    array it no longer finds), and verify afterwards in another: the write says which array
    was lost and what to do, and verify says what status says."""
    _, out = threshold_job(tmp_path)
    block = classes(out)[:32, :32]
    root = json.loads((out / "zarr.json").read_text())
    root.pop("consolidated_metadata", None)  # as while a run writes: it consolidates at its end
    (out / "zarr.json").write_text(json.dumps(root))
    shutil.rmtree(out / array)
    target = OutputTarget(str(out))
    lost = f"lost its {array} array while the run wrote it"
    with pytest.raises(CorruptOutputError, match=lost) as raised:
        if array == "classes":
            target.write("classes", (slice(0, 32), slice(0, 32)), block)
        else:
            target.mark_done("0.0", "00" * 32)
    assert "with --overwrite" in str(raised.value)

    zarr.consolidate_metadata(str(out))  # as the failed run's end does: the array is unlisted
    said = {command: geoseg(command, str(out)) for command in ("status", "verify")}
    for command, result in said.items():
        told = flat(result.stderr)
        assert result.returncode == 2 and "internal error" not in told, (command, told)
        assert f"has lost its {array} array(s)" in told, (command, told)
