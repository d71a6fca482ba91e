"""A stage's record (``attrs["geoseg"]["instances"]``, the edges') written when the disk is
full: the error names the output's metadata file and the stage. zarr's error carries no file
name, so the command said only "A write failed"."""

from __future__ import annotations

import resource
import signal
import subprocess
import sys
import textwrap

from tests.conftest import job_dict, textured_image, write_zarr


def test_a_full_disk_while_recording_a_stage_names_the_file_and_the_stage(tmp_path):
    from geoseg.jobs import JobSpec, run

    src = write_zarr(tmp_path / "in.zarr", textured_image(64, 64))
    out = tmp_path / "out.zarr"
    spec = job_dict(src, "builtin:demo-unet", str(out))
    spec["model"] = {"method": "otsu", "params": {"feature": 1}}
    spec["cluster"] = {"kind": "threads"}
    run(JobSpec.from_dict(spec))
    size = (out / "zarr.json").stat().st_size
    script = textwrap.dedent(f"""
        from geoseg.io.output import OutputTarget
        from geoseg.io.stages import mark_stage
        from geoseg.errors import GeosegError
        try:
            mark_stage(OutputTarget({str(out)!r}), "instances", {{"status": "running"}})
        except GeosegError as exc:
            print(exc)
    """)

    def at_most_the_file_as_it_is() -> None:  # a larger zarr.json fails as on a full disk
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))

    said = subprocess.run([sys.executable, "-c", script], check=False, capture_output=True,
                          text=True, preexec_fn=at_most_the_file_as_it_is, timeout=300)
    assert said.returncode == 0, said.stderr[-2000:]
    message = said.stdout
    assert "Writing the instances stage's record into" in message, message
    assert f"{out}/zarr.json failed: the disk is full" in message, message
