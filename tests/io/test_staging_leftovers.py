"""Staging folders a killed process left beside the files it wrote are removed by the next write
into the same folder; another writer's, live, never are."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from geoseg.io.files import (
    STAGING_PREFIX,
    STALE_STAGING_SECONDS,
    _owner,
    staged_file,
    sweep_staging_leftovers,
    write_whole,
)


def staging(folder: Path, name: str, *, age: float = 0.0) -> Path:
    """A staging folder ``name`` holding a partial file, nothing in it changed for ``age`` s."""
    path = folder / name
    path.mkdir()
    (path / "tiled-out.tif").write_bytes(b"partial")
    then = time.time() - age
    for changed in (path / "tiled-out.tif", path):
        os.utime(changed, (then, then))
    return path


def dead_pid() -> int:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], check=True,
                          capture_output=True, text=True)
    return int(done.stdout)


def test_a_write_killed_part_way_leaves_staging_that_the_next_write_removes(tmp_path):
    killed = textwrap.dedent(f"""
        import os
        from geoseg.io.files import staged_file
        with staged_file({str(tmp_path / "out.tif")!r}) as staged:
            staged.write_bytes(b"half a COG")
            os._exit(9)  # as a kill -9 part-way
    """)
    subprocess.run([sys.executable, "-c", killed], check=False, timeout=120)
    assert [p.name[:len(STAGING_PREFIX)] for p in tmp_path.iterdir()] == [STAGING_PREFIX]
    write_whole(str(tmp_path / "out.tif"), b"a whole COG")
    assert os.listdir(tmp_path) == ["out.tif"]
    assert (tmp_path / "out.tif").read_bytes() == b"a whole COG"


def test_only_leftovers_of_dead_or_long_idle_writers_are_removed(tmp_path):
    here = _owner().split("@", 1)[1]
    dead = staging(tmp_path, f"{STAGING_PREFIX}{dead_pid()}@{here}-abc123")
    live = staging(tmp_path, f"{STAGING_PREFIX}{os.getppid()}@{here}-def456", age=2e6)
    elsewhere = staging(tmp_path, f"{STAGING_PREFIX}1@another-host-ghi789",
                        age=STALE_STAGING_SECONDS - 600)
    idle = staging(tmp_path, f"{STAGING_PREFIX}1@another-host-jkl012",
                   age=STALE_STAGING_SECONDS + 600)
    unmarked = staging(tmp_path, ".geoseg-export-mno345", age=STALE_STAGING_SECONDS + 600)
    young = staging(tmp_path, f"{STAGING_PREFIX}pqr678")
    assert sorted(sweep_staging_leftovers(tmp_path)) == sorted(
        p.name for p in (dead, idle, unmarked))
    assert sorted(tmp_path.iterdir()) == sorted([live, elsewhere, young])


def test_a_concurrent_write_in_the_same_folder_keeps_the_other_staging(tmp_path):
    with staged_file(str(tmp_path / "a.tif")) as first:
        first.write_bytes(b"being written")
        write_whole(str(tmp_path / "b.json"), "{}")
        assert first.read_bytes() == b"being written"
    assert sorted(os.listdir(tmp_path)) == ["a.tif", "b.json"]
