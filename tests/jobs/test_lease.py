"""Leases on local files and on a real S3 server (moto): exclusive, expiring, renewed, released."""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import time
from pathlib import Path

import pytest
import s3fs

from geoseg.errors import LeaseLostError, OutputBusyError
from geoseg.jobs.lease import Lease, LeaseRecord, lease_url, read_lease, store_for


def stale_lease(output: str, storage_options: dict | None = None,
                owner: str = "dead-host-1-abc") -> None:
    """A lease whose owner stopped renewing it an hour ago."""
    record = LeaseRecord(owner, time.time() - 7200, time.time() - 3600)
    if output.startswith("s3://"):
        s3fs.S3FileSystem(skip_instance_cache=True, **storage_options).pipe_file(
            lease_url(output), record.to_bytes())
    else:
        Path(lease_url(output)).write_bytes(record.to_bytes())


def test_a_held_lease_excludes_others_until_released(tmp_path):
    out = str(tmp_path / "out.zarr")
    first = Lease(out, owner="run-a", seconds=60, batch="nightly")
    second = Lease(out, owner="run-b", seconds=60)
    assert first.acquire()
    assert not second.acquire()
    assert second.holder.owner == "run-a" and not second.holder.expired()
    on_disk = json.loads(Path(lease_url(out)).read_text())
    assert on_disk["owner"] == "run-a" and on_disk["batch"] == "nightly"
    assert on_disk["output"] == out
    first.release()
    assert not Path(lease_url(out)).exists()
    assert second.acquire() and read_lease(out).owner == "run-b"


def test_an_expired_lease_is_taken_over_and_a_live_one_is_not(tmp_path):
    out = str(tmp_path / "out.zarr")
    stale_lease(out)
    lease = Lease(out, owner="run-a", seconds=60)
    assert lease.acquire()
    assert read_lease(out).owner == "run-a" and read_lease(out).expires > time.time() + 50
    assert not Lease(out, owner="run-b", seconds=60).acquire()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.zarr.lease"]  # nothing left aside


def test_a_lease_expiring_later_than_any_geoseg_takes_is_taken_over(tmp_path):
    """A lease file saying expires: 9999-... (by hand, or another tool) kept every run off the
    output for ever: no run renews a lease past a week."""
    from geoseg.errors import ParameterError
    from geoseg.jobs.lease import MAX_LEASE_SECONDS

    out = str(tmp_path / "out.zarr")
    forever = LeaseRecord("another-host-4242-abcdef", time.time(), 253402300799.0)  # 9999-12-31
    Path(lease_url(out)).write_bytes(forever.to_bytes())
    assert read_lease(out).stale()
    week = LeaseRecord("another-host-4242-abcdef", time.time(), time.time() + MAX_LEASE_SECONDS)
    assert not week.stale()  # the longest a batch may ask for is waited out
    lease = Lease(out, owner="run-a", seconds=60)
    assert lease.acquire() and read_lease(out).owner == "run-a"
    with pytest.raises(ParameterError, match="up to 604800 \\(a week\\)"):
        Lease(out, owner="run-b", seconds=MAX_LEASE_SECONDS + 1)


def test_an_expired_lease_is_left_alone_while_another_process_takes_it_over(tmp_path):
    """The swap guard: while one process checks and replaces an expired lease, the others
    neither replace it nor find the lease absent (where a plain create would slip in)."""
    import os

    out = str(tmp_path / "out.zarr")
    stale_lease(out)
    guard = Path(lease_url(out) + ".swap")
    guard.touch()  # a process is in the middle of taking it over
    assert not Lease(out, owner="run-b", seconds=60).acquire()
    assert read_lease(out).owner == "dead-host-1-abc"
    old = time.time() - 120  # that process died there: its guard is cleared in time
    os.utime(guard, (old, old))
    assert Lease(out, owner="run-c", seconds=60).acquire()
    assert read_lease(out).owner == "run-c" and not guard.exists()


def test_release_never_deletes_a_lease_another_owner_took(tmp_path):
    out = str(tmp_path / "out.zarr")
    mine = Lease(out, owner="run-a", seconds=60)
    assert mine.acquire()
    Path(lease_url(out)).write_bytes(LeaseRecord("run-b", time.time(), time.time() + 60).to_bytes())
    mine.release()
    assert read_lease(out).owner == "run-b"


def _try_take(out: str, owner: str, barrier: multiprocessing.Barrier,
              results: multiprocessing.Queue) -> None:
    barrier.wait()
    results.put((owner, Lease(out, owner=owner, seconds=60).acquire()))


@pytest.mark.parametrize("stale", [False, True], ids=["free", "expired"])
def test_many_processes_at_once_exactly_one_wins(tmp_path, stale):
    ctx = multiprocessing.get_context("fork")  # fast: no re-import
    for round_ in range(3):
        out = str(tmp_path / f"out{round_}.zarr")
        if stale:
            stale_lease(out)
        barrier, results = ctx.Barrier(8), ctx.Queue()
        procs = [ctx.Process(target=_try_take, args=(out, f"run-{i}", barrier, results))
                 for i in range(8)]
        for p in procs:
            p.start()
        outcomes = dict(results.get(timeout=120) for _ in procs)
        for p in procs:
            p.join(timeout=60)
        winners = [owner for owner, won in outcomes.items() if won]
        assert len(winners) == 1, outcomes
        assert read_lease(out).owner == winners[0]


def test_renewal_keeps_a_short_lease_alive_and_release_follows_failure(tmp_path):
    out = str(tmp_path / "out.zarr")
    lease = Lease(out, owner="run-a", seconds=2)
    assert lease.acquire()
    with pytest.raises(RuntimeError, match="job failed"), lease.renewing():
        time.sleep(4.5)  # more than twice the lease's length
        assert not Lease(out, owner="run-b", seconds=1).acquire()
        assert read_lease(out).owner == "run-a" and not read_lease(out).expired()
        raise RuntimeError("job failed")
    assert read_lease(out) is None  # released although the job failed


def test_a_lease_taken_over_is_noticed_at_the_next_renewal(tmp_path):
    out = str(tmp_path / "out.zarr")
    lease = Lease(out, owner="run-a", seconds=0.6)
    assert lease.acquire()
    with lease.renewing():
        taken = LeaseRecord("run-b", time.time(), time.time() + 60)
        store = store_for(lease_url(out))
        while store.swap(taken.to_bytes(), store.read()[1]) is None:  # as a takeover does,
            time.sleep(0.01)  # between two renewals
        deadline = time.time() + 10
        while not lease.lost.is_set() and time.time() < deadline:
            time.sleep(0.05)
        with pytest.raises(LeaseLostError, match="taken over by another run"):
            lease.check()
    assert read_lease(out).owner == "run-b"  # not released: it is not ours any more


def expired_with_a_takeover_after_its_next_read(out: str) -> tuple[Lease, list[bool]]:
    """An expired lease of run-a whose store, at its next read, lets run-b try to take it over
    (between the read and what follows it); the list gets whether run-b took it."""
    held = Lease(out, owner="run-a", seconds=0.05)
    assert held.acquire()
    time.sleep(0.1)  # expired: another run may take it over
    taker = Lease(out, owner="run-b", seconds=60)
    took: list[bool] = []
    read = held._store.read

    def read_then_taken_over():
        current = read()
        if not took:
            took.append(taker.acquire())
        return current

    held._store.read = read_then_taken_over
    return held, took


def test_a_takeover_landing_inside_a_renewal_is_not_overwritten(tmp_path):
    """A renewal read the lease, a takeover replaced it, then the renewal wrote over the new
    owner's lease: two runs believed they held the output. The renewal now holds the swap
    guard from its read to its write, so the takeover in between finds it busy."""
    out = str(tmp_path / "out.zarr")
    renewing, took = expired_with_a_takeover_after_its_next_read(out)
    renewed = renewing.renew()
    owner = read_lease(out).owner
    assert took == [owner == "run-b"] and renewed == (owner == "run-a"), (took, renewed, owner)


def test_a_takeover_landing_inside_a_release_keeps_its_lease(tmp_path):
    """The release read its lease, a takeover replaced it, then the release deleted the new
    owner's lease."""
    out = str(tmp_path / "out.zarr")
    ending, took = expired_with_a_takeover_after_its_next_read(out)
    ending.release()
    left = read_lease(out)
    assert took == [left is not None and left.owner == "run-b"], (took, left)


def test_a_renewal_meeting_another_swap_under_way_is_retried_not_lost(tmp_path):
    out = str(tmp_path / "out.zarr")
    lease = Lease(out, owner="run-a", seconds=60)
    assert lease.acquire()
    guard = Path(f"{lease_url(out)}.swap")
    guard.touch()  # another process replacing the lease this instant
    with pytest.raises(OutputBusyError, match="another process is replacing this lease"):
        lease.renew()
    assert not lease.lost.is_set() and read_lease(out).owner == "run-a"
    guard.unlink()
    assert lease.renew() and lease.held


def test_s3_leases_are_conditional_and_hold_no_credentials(s3_server):
    out = "s3://geoseg/leases/out.zarr"
    first = Lease(out, s3_server, owner="run-a", seconds=60)
    second = Lease(out, s3_server, owner="run-b", seconds=60)
    assert first.acquire() and not second.acquire()
    assert second.holder.owner == "run-a"
    raw = s3fs.S3FileSystem(skip_instance_cache=True, **s3_server).cat_file(lease_url(out)).decode()
    assert s3_server["secret"] not in raw and s3_server["key"] not in raw
    assert first.renew() and read_lease(out, s3_server).owner == "run-a"
    first.release()
    assert read_lease(out, s3_server) is None
    assert second.acquire()
    second.release()


def test_s3_takeover_is_a_compare_and_swap_on_the_etag(s3_server):
    """Two runs read the same expired lease; only the first swap lands, the second sees a
    changed ETag (moto's server is not atomic under concurrent requests, AWS S3 is: the race is
    replayed step by step rather than left to threads)."""
    out = "s3://geoseg/leases/stale.zarr"
    stale_lease(out, s3_server)
    a, b = store_for(lease_url(out), s3_server), store_for(lease_url(out), s3_server)
    _, token_a = a.read()
    _, token_b = b.read()
    assert token_a == token_b
    taken = LeaseRecord("run-a", time.time(), time.time() + 60).to_bytes()
    assert a.swap(taken, token_a) is not None
    assert b.swap(b"taken by b", token_b) is None
    assert b.create(b"taken by b") is None
    assert a.read()[0] == taken
    late = Lease(out, s3_server, owner="run-c", seconds=60)
    assert not late.acquire() and late.holder.owner == "run-a"


@pytest.mark.timeout(60)
@pytest.mark.parametrize("where", ["s3", "memory"])
def test_release_on_an_object_store_never_deletes_a_lease_another_owner_took(s3_server, where):
    out, options = ("s3://geoseg/leases/taken.zarr", s3_server) if where == "s3" else (
        "memory://geoseg-leases/taken.zarr", {})
    mine = Lease(out, options, owner="run-a", seconds=60)
    assert mine.acquire()
    store = store_for(lease_url(out), options)
    _, token = store.read()
    assert store.swap(LeaseRecord("run-b", time.time(), time.time() + 60).to_bytes(), token)
    mine.release()
    assert read_lease(out, options).owner == "run-b"
    store.delete(store.read()[1])
    assert read_lease(out, options) is None


def test_tasks_of_a_run_whose_lease_was_taken_over_write_nothing(tmp_path):
    """A run stalled past its lease's expiry (stopped, swapped out) while another run took the
    output over: its tasks check the lease before each write, so none of them writes a chunk
    or marks one done in the other run's output."""
    from geoseg.io.output import OutputTarget
    from geoseg.jobs import JobSpec, run
    from tests.conftest import textured_image, write_zarr

    src = write_zarr(tmp_path / "in.zarr", textured_image(128, 128, bands=1), chunks=(32, 32))
    out = str(tmp_path / "out.zarr")
    spec = JobSpec.from_dict({"input": {"url": src},
                              "model": {"method": "threshold", "params": {"thresholds": [128]}},
                              "output": {"url": out, "chunks": [32, 32]}})
    lease = Lease(out, owner="run-a", seconds=600)
    assert lease.acquire()
    taken = LeaseRecord("run-b", time.time(), time.time() + 600)
    Path(lease_url(out)).write_bytes(taken.to_bytes())
    with pytest.raises(LeaseLostError, match="taken over by another run"):
        run(spec, scheduler="threads", lease=lease)
    assert OutputTarget(out).done_keys() == set()
    assert not list((tmp_path / "out.zarr" / "classes").rglob("c/*/*"))
    assert read_lease(out).owner == "run-b"


def test_a_run_that_lost_its_lease_marks_nothing_in_the_output_another_run_now_writes(tmp_path):
    """Marking the output complete (or failed) is fenced as chunk writes are: the run that lost
    its lease wrote its completion and provenance into the next owner's output."""
    from geoseg.io.output import OutputTarget
    from geoseg.jobs import JobSpec, run
    from geoseg.jobs.lease import Fence
    from tests.conftest import textured_image, write_zarr

    src = write_zarr(tmp_path / "in.zarr", textured_image(64, 64, bands=1), chunks=(32, 32))
    out = str(tmp_path / "out.zarr")
    run(JobSpec.from_dict({"input": {"url": src}, "output": {"url": out},
                           "model": {"method": "threshold", "params": {"thresholds": [128]}}}),
        scheduler="threads")
    Path(lease_url(out)).write_bytes(LeaseRecord("run-b", time.time(), time.time() + 600).to_bytes())
    before = OutputTarget(out).open_group(mode="r").attrs["geoseg"]
    fenced = OutputTarget(out, fence=Fence(lease_url(out), "run-a", out, 600))
    with pytest.raises(LeaseLostError, match="taken over by another run"):
        fenced.finalize({"status": "complete", "provenance": {"job": "run-a's"}})
    assert OutputTarget(out).open_group(mode="r").attrs["geoseg"] == before


def test_one_output_reached_by_two_paths_takes_one_lease(tmp_path):
    """A folder linked under another name: the second path's run was not refused, and its
    --overwrite deleted a live run's output."""
    (tmp_path / "real").mkdir()
    (tmp_path / "alias").symlink_to(tmp_path / "real")
    assert lease_url(str(tmp_path / "alias" / "out.zarr")) == \
        lease_url(str(tmp_path / "real" / "out.zarr/")) == \
        lease_url(f"file://{tmp_path}/real/out.zarr") == str(tmp_path / "real" / "out.zarr.lease")
    first = Lease(str(tmp_path / "real" / "out.zarr"), owner="a", seconds=60)
    assert first.acquire()
    try:
        assert not Lease(str(tmp_path / "alias" / "out.zarr"), owner="b", seconds=60).acquire()
    finally:
        first.release()


def test_an_output_given_as_a_symbolic_link_is_refused_before_anything_runs(tmp_path):
    """--overwrite through the link deleted its target's contents and made a new folder in
    the link's place, leaving the target marked as being deleted."""
    import yaml

    from tests.cli import geoseg
    from tests.conftest import textured_image, write_zarr

    write_zarr(tmp_path / "in.zarr", textured_image(64, 64, bands=1), chunks=(32, 32))
    spec = {"input": {"url": str(tmp_path / "in.zarr")},
            "model": {"method": "threshold", "params": {"thresholds": [100]}},
            "output": {"url": str(tmp_path / "real.zarr"), "chunks": [32, 32]}}
    (tmp_path / "real.yaml").write_text(yaml.safe_dump(spec))
    assert geoseg("run", str(tmp_path / "real.yaml"), "--cluster", "threads").returncode == 0
    (tmp_path / "alias.zarr").symlink_to(tmp_path / "real.zarr")
    spec["output"]["url"] = str(tmp_path / "alias.zarr")
    (tmp_path / "alias.yaml").write_text(yaml.safe_dump(spec))
    before = sorted(p.name for p in (tmp_path / "real.zarr").iterdir())
    result = geoseg("run", str(tmp_path / "alias.yaml"), "--cluster", "threads", "--overwrite")
    said = " ".join(result.stderr.split())
    assert result.returncode == 2 and "a symbolic link to" in said, said
    assert "Give the path it links to" in said
    assert (tmp_path / "alias.zarr").is_symlink()
    assert sorted(p.name for p in (tmp_path / "real.zarr").iterdir()) == before
    assert geoseg("status", str(tmp_path / "real.zarr")).returncode == 0


def test_a_lease_of_another_pid_namespace_on_this_host_is_never_thought_gone():
    """Containers sharing a host name (docker --network host) number their processes apart: a
    live run's pid that does not exist here took its lease over; a dead pid is judged gone only
    in the namespace it was counted in."""
    import socket
    import subprocess
    import sys

    from geoseg.jobs.lease import pid_namespace

    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()  # a pid no process of this namespace has now
    owner = f"{socket.gethostname()}-{ended.pid}-0123456789ab"
    here = LeaseRecord(owner, time.time(), time.time() + 600, pid_namespace=pid_namespace())
    elsewhere = LeaseRecord(owner, time.time(), time.time() + 600, pid_namespace="pid:[1]")
    assert here.owner_gone() and here.stale()
    assert not elsewhere.owner_gone() and not elsewhere.stale()
    assert LeaseRecord.from_bytes(elsewhere.to_bytes()).pid_namespace == "pid:[1]"
    before = LeaseRecord(owner, time.time(), time.time() + 600)  # written before leases named it
    assert before.owner_gone() and before.stale()  # a run killed before an upgrade: taken at once


MAX_LEASE_BYTES = 64 * 1024  # the most of a lease object geoseg reads (lease.MAX_LEASE_BYTES)


def _peak_bytes(call) -> tuple[object, int]:
    """What ``call()`` returns (or raises, returned) and the most memory Python allocated meanwhile."""
    import tracemalloc

    tracemalloc.start()
    try:
        try:
            result = call()
        except Exception as exc:  # noqa: BLE001 - the caller checks what it was
            result = exc
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_lease_file_larger_than_any_lease_is_read_no_further_and_taken_over(tmp_path):
    """A 2 GiB (sparse) file at the lease path was read whole by status, by run and by every
    write's fence (3.3 GB of memory): a lease is a few hundred bytes, so no more than 64 KiB is
    read, and what is that large counts as the unreadable (expired) lease it is."""
    from geoseg.jobs.lease import Fence

    out = str(tmp_path / "out.zarr")
    path = Path(lease_url(out))
    with open(path, "wb") as f:
        f.truncate(256 * 2**20)  # sparse: no disk used
    held, peak = _peak_bytes(lambda: read_lease(out))
    assert peak < 4 * MAX_LEASE_BYTES, peak
    assert held.owner == "unreadable lease" and held.stale()
    fenced, peak = _peak_bytes(Fence(str(path), "run-a", out, 60))
    assert isinstance(fenced, LeaseLostError) and peak < 4 * MAX_LEASE_BYTES, (fenced, peak)
    lease = Lease(out, owner="run-a", seconds=60)
    assert lease.acquire() and read_lease(out).owner == "run-a"
    assert path.stat().st_size < 1024
    lease.fence()()  # its own lease now: the write goes on
    lease.release()


def _unblock(fifo: Path) -> None:
    """Give a reader stuck opening ``fifo`` (the code before the fix) its end of file."""
    import os

    with contextlib.suppress(OSError):
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))


@pytest.mark.parametrize("kind", ["FIFO", "folder", "device"])
def test_a_fifo_device_or_folder_at_the_lease_path_is_refused_by_name_never_waited_on(tmp_path,
                                                                                        kind):
    """A FIFO at the lease path hung status and run for ever, a folder was an internal
    IsADirectoryError: each is refused at once, naming the path and what to do."""
    import os
    import threading

    from geoseg.errors import OutputLocationError

    out = str(tmp_path / "out.zarr")
    path = Path(lease_url(out))
    {"FIFO": lambda: os.mkfifo(path), "folder": path.mkdir,
     "device": lambda: path.symlink_to("/dev/null")}[kind]()
    results: list[object] = []
    attempts = (lambda: read_lease(out), Lease(out, owner="run-a", seconds=60).acquire,
                lease_fence(out))
    worker = threading.Thread(target=lambda: results.extend(_peak_bytes(a)[0] for a in attempts),
                              daemon=True)
    worker.start()
    worker.join(10)
    if worker.is_alive():
        _unblock(path)
        pytest.fail(f"reading a {kind} at the lease path blocked")
    assert len(results) == 3
    for result in results:
        assert isinstance(result, OutputLocationError), result
        said = str(result)
        assert str(path) in said and "not a file" in said and "Remove it" in said, said
    assert os.path.lexists(path)  # left as it was: the user's to remove


def lease_fence(out: str):
    """The check a run's tasks make before each write, as run-a's."""
    from geoseg.jobs.lease import Fence

    return Fence(lease_url(out), "run-a", out, 60)


def test_a_status_of_an_output_with_a_fifo_at_its_lease_path_says_so_at_once(tmp_path):
    """The command-line answer: a clear error naming the lease path, exit 2, no waiting."""
    import os

    from geoseg.io.output import OutputTarget
    from tests.cli import geoseg
    from tests.jobs.test_repair import flat, threshold_job

    spec, out = threshold_job(tmp_path)
    OutputTarget(str(out)).finalize({"status": "running"})  # interrupted: status asks the lease
    path = lease_url(str(out))
    os.mkfifo(path)
    try:
        answers = [geoseg(*command, own_process=True, timeout=30) for command in
                   (["status", str(out)], ["run", str(spec), "--scheduler", "threads"])]
    finally:
        _unblock(Path(path))
    for said in answers:
        told = flat(said.stderr)
        assert said.returncode == 2 and f"The lease path {path} is a FIFO" in told, told
        assert "internal error" not in told


def test_an_s3_lease_is_read_with_one_bounded_range(s3_server, monkeypatch):
    """The S3 store read the whole object (s3fs's read-ahead fetches 50 MiB blocks): what it
    asks for now is at most 64 KiB and a byte, however large the object is."""
    from s3fs.core import S3File

    out = "s3://geoseg/leases/large.zarr"
    s3fs.S3FileSystem(skip_instance_cache=True, **s3_server).pipe_file(
        lease_url(out), b" " * (2 * 2**20))
    asked: list[int] = []
    fetch = S3File._fetch_range
    monkeypatch.setattr(S3File, "_fetch_range",
                        lambda self, start, end: asked.append(end - start) or fetch(self, start, end))
    held = read_lease(out, s3_server)
    assert held.owner == "unreadable lease" and held.stale()
    assert asked and max(asked) <= MAX_LEASE_BYTES + 1, asked


def test_a_lease_file_larger_than_any_lease_is_named_once_when_a_run_replaces_it(tmp_path, caplog):
    """The warning about someone's large file at the lease path came twice for one takeover
    (once per read: judging it, then checking it unchanged before the swap), and never for
    status, which replaces nothing: it comes once, when a run replaces it."""
    import logging

    out = str(tmp_path / "out.zarr")
    Path(lease_url(out)).write_bytes(b"x" * (MAX_LEASE_BYTES + 10))
    with caplog.at_level(logging.WARNING, logger="geoseg"):
        assert read_lease(out).owner == "unreadable lease"
        assert not [r for r in caplog.records if "KiB" in r.getMessage()]
        lease = Lease(out, owner="run-a", seconds=60)
        assert lease.acquire()
    said = [r.getMessage() for r in caplog.records if "KiB" in r.getMessage()]
    assert len(said) == 1 and "replaces it" in said[0] and lease_url(out) in said[0], said
    lease.release()


def test_renewals_that_fail_say_why_once_and_the_lease_is_lost_only_at_expiry(tmp_path, caplog,
                                                                               monkeypatch):
    """A store that failed every renewal left nothing in the log: the run later ended saying
    its lease "expired", with the reason never shown. The first failure of a streak is logged
    (scrubbed), the renewal that ends it too; the lease counts as lost only once it expired."""
    import logging

    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "SuperSecretValue987")
    out = str(tmp_path / "out.zarr")
    lease = Lease(out, owner="run-a", seconds=1.5)  # renewed every 0.5 s
    assert lease.acquire()
    store, outage = lease._store, {"left": 2}
    real_renew = store.renew

    def flaky(data, token):  # the store's own call, failing twice then answering again
        if outage["left"]:
            outage["left"] -= 1
            raise OSError("No space left on device (key SuperSecretValue987)")
        return real_renew(data, token)

    monkeypatch.setattr(store, "renew", flaky)
    with caplog.at_level(logging.INFO, logger="geoseg"), lease.renewing():
        deadline = time.monotonic() + 10
        while outage["left"] or not any("renewed again" in r.getMessage() for r in caplog.records):
            assert time.monotonic() < deadline and not lease.lost.is_set()
            time.sleep(0.05)
    said = [r.getMessage() for r in caplog.records if "lease on" in r.getMessage()]
    assert len([m for m in said if "could not be renewed" in m]) == 1, said
    assert "OSError: No space left on device" in said[0], said
    assert "SuperSecretValue987" not in "\n".join(said), said

    gone = Lease(str(tmp_path / "other.zarr"), owner="run-b", seconds=0.6)
    assert gone.acquire()

    def down(data, token):  # a store that never answers again
        raise OSError("Connection refused")

    monkeypatch.setattr(gone._store, "renew", down)
    t0 = time.monotonic()
    with gone.renewing():
        assert gone.lost.wait(10)
    assert time.monotonic() - t0 >= 0.6  # not before the lease would have expired
