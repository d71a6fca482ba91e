"""deploy/README.md and deploy/hpc/README.md: every ``dask`` and ``geoseg`` command they name, in
their shell blocks and in their inline code, is a real command of this environment (the one
``make setup`` and the images install), with every option it is given."""

from __future__ import annotations

import re
import shlex
from pathlib import Path, PurePosixPath

import pytest

from tests.deploy.commands import check_command

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
DOCS = [DEPLOY / "README.md", DEPLOY / "hpc" / "README.md"]
SHELL_BLOCK = re.compile(r"^```(?:bash|sh|shell)\n(.*?)^```", re.MULTILINE | re.DOTALL)
INLINE = re.compile(r"(?<!`)`([^`\n]+)`(?!`)")
PROGRAMS = ("dask", "geoseg")
SEPARATORS = {";", "&", "&&", "|", "||", "(", ")"}
CERTIFICATE = re.compile(r"^[\w.-]+\.(?:pem|key|crt)$")
KEYWORDS = {"do", "then", "else", "sudo", "exec", "time"}


def commands(shell: str) -> list[list[str]]:
    """The simple commands of one line of shell (comments and separators handled), each
    without its leading ``VAR=value`` words and keywords."""
    lexer = shlex.shlex(shell, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    found, words = [], []
    for token in [*lexer, ";"]:
        if token in SEPARATORS:
            found.append(words)
            words = []
        else:
            words.append(token)
    simple = []
    for words in found:
        while words and (words[0] in KEYWORDS or re.match(r"^\w+=", words[0])):
            words = words[1:]
        if words:
            simple.append(words)
    return simple


def named_commands(path: Path) -> list[list[str]]:
    """``dask`` / ``geoseg`` commands in ``path``'s shell blocks and inline code."""
    text = path.read_text()
    blocks = SHELL_BLOCK.findall(text)
    prose = SHELL_BLOCK.sub("", text)
    lines = [line for block in blocks for line in block.replace("\\\n", " ").splitlines()]
    found = [c for line in lines for c in commands(line)]
    found += [c for span in INLINE.findall(prose) for c in commands(span)]
    return [c for c in found if PurePosixPath(c[0]).name in PROGRAMS and len(c) > 1]  # not `dask`


NAMED = [(path.relative_to(DEPLOY).as_posix(), command) for path in DOCS
         for command in named_commands(path)]


def test_the_docs_name_commands():
    programs = {(doc, command[0]) for doc, command in NAMED}
    assert {("README.md", "dask"), ("README.md", "geoseg"), ("hpc/README.md", "geoseg")} <= programs
    assert ["dask", "scheduler", "--host", "0.0.0.0", "--port", "8786"] in [c for _, c in NAMED]


@pytest.mark.parametrize(("doc", "command"), NAMED, ids=[" ".join(c)[:60] for _, c in NAMED])
def test_every_command_the_docs_name_exists(doc, command, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the certificates a command names are the reader's own
    for word in command:
        if CERTIFICATE.match(word):
            (tmp_path / word).touch()
    check_command([PurePosixPath(command[0]).name, *command[1:]])


def test_a_missing_command_is_caught():
    (command,) = commands('x=1 dask cuda worker tcp://A:8786 --nthreads 4  # one per GPU')
    assert command == ["dask", "cuda", "worker", "tcp://A:8786", "--nthreads", "4"]
    with pytest.raises(AssertionError, match="dask cuda: no such command"):
        check_command(command)
