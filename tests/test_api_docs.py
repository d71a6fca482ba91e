"""docs/api.md, the map of the Python API, keeps up with it: its example runs as written, and
every public name of ``geoseg`` and every argument of each has its place on the page."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

import geoseg

API = Path(__file__).resolve().parents[1] / "docs" / "api.md"
PUBLIC = [name for name in geoseg.__all__ if not name.startswith("__")]


def sections() -> dict[str, str]:
    """Each ``### `name(...)` `` heading's name and the text under it."""
    parts = re.split(r"^### `(\w+)", API.read_text(), flags=re.MULTILINE)
    return {name: body for name, body in zip(parts[1::2], parts[2::2])}


@pytest.mark.parametrize("name", PUBLIC)
def test_every_public_name_and_each_of_its_arguments_is_on_the_api_page(name):
    body = sections().get(name)
    assert body is not None, f"docs/api.md has no '### `{name}' section"
    obj = getattr(geoseg, name)
    params = [] if name == "Segmenter" else list(inspect.signature(obj).parameters)
    text = body.split("\n", 1)[1]  # below the heading
    missing = [p for p in params if f"`{p}`" not in text]
    assert not missing, f"docs/api.md, {name}: arguments not described: {missing}"


def test_the_api_page_names_no_section_that_is_not_public():
    assert set(sections()) <= set(PUBLIC)


def test_the_api_page_example_runs_as_written(tmp_path, one_torch_thread, monkeypatch):
    """Run in a namespace of its own, as a user pasting it runs it (it used a name ``tmp``
    that only this test defined)."""
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    code = re.search(r"```python\n(.*?)```", API.read_text(), flags=re.DOTALL).group(1)
    exec(compile(code, str(API), "exec"), {})  # noqa: S102 (the page's own code)
