"""``geoseg train`` without a spec reaches the demo trainers in geoseg.training (fast: refusals only)."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from geoseg.cli import app
from geoseg.errors import OutputExistsError


@pytest.mark.parametrize("extra", [[], ["--instances"]])
def test_demo_trainers_refuse_to_overwrite_a_model(tmp_path, extra):
    out = tmp_path / "model.safetensors"
    out.write_bytes(b"kept")
    result = CliRunner().invoke(app, ["train", "--out", str(out), "--steps", "1", *extra])
    assert isinstance(result.exception, OutputExistsError), result.output
    assert "pass --overwrite" in str(result.exception) and out.read_bytes() == b"kept"


def test_without_spec_or_out_says_what_to_give():
    result = CliRunner().invoke(app, ["train"])
    assert result.exit_code == 2 and "--out FILE" in result.output
