"""Every exception geoseg raises on purpose is a :class:`geoseg.errors.GeosegError`, so the CLI
reports it as one clean message (exit 2) instead of a traceback.

The first test walks the syntax tree of every module under ``geoseg/`` and resolves what each
``raise`` raises: a class from :mod:`geoseg.errors`, a factory function whose return annotation is
one, a parameter typed ``type[...]`` of one, a name bound to one of those, or the caught
exception itself. Anything else is listed as
``file:line`` with what it raises, unless the short allow-list below says why it may stay.
"""

from __future__ import annotations

import ast
import builtins
import subprocess
from pathlib import Path

import pytest
import yaml

import geoseg
from geoseg import errors
from tests.cli import geoseg as geoseg_cli
from tests.conftest import job_dict, textured_image, write_zarr

PACKAGE = Path(geoseg.__file__).parent

# Raised by name, and why each may stay what it is.
ALLOWED_CLASSES = {
    "typer.Exit",  # the CLI's own way to end with an exit code; prints nothing
    "typer.BadParameter",  # click prints it as a usage error (exit 2) naming the option
}
# Special methods whose callers expect one built-in: (function name, exception).
PROTOCOLS = {
    ("__getattr__", "AttributeError"),  # a module's or class's lazy attributes
    ("__next__", "StopIteration"),  # the iterator protocol
}
# Raised inside a function decorated with one of these: pydantic turns a ValueError (or
# AssertionError) into a ValidationError that geoseg reports key by key as a JobSpecError.
VALIDATOR_DECORATORS = {"field_validator", "model_validator", "validator", "root_validator"}
VALIDATOR_EXCEPTIONS = {"ValueError", "AssertionError"}
# (module, function, what is raised): a protocol or a re-raise the tree cannot see through.
ALLOWED_SITES = {
    # json.dumps(default=...) must raise TypeError for a value it cannot store
    ("geoseg/core/records.py", "plain", "TypeError"),
    # json.loads's own answer to an argument that is not text, which callers catch as such
    ("geoseg/core/jsontext.py", "_utf8", "TypeError"),
    # the Name type's AfterValidator: pydantic reports its ValueError as the key's problem
    ("geoseg/core/spec.py", "_printable", "ValueError"),
    # the spec loader's stop past MAX_LEVELS, caught in _parse_yaml: it never leaves it
    ("geoseg/core/spec.py", "compose_node", "_TooDeep"),
    # a spec document's own error class, typed ClassVar[type[GeosegError]]
    ("geoseg/core/spec.py", "from_dict", "cls.error"),
    # PyYAML's own error, so that the spec loader reports it as every YAML error, with its line
    ("geoseg/core/spec.py", "_measure", "yaml.composer.ComposerError"),
    ("geoseg/core/spec.py", "_check_unique_keys", "yaml.constructor.ConstructorError"),
    # translate() returns a geoseg error, or the caught exception itself (re-raised bare above)
    ("geoseg/io/remote.py", "_retry_loop", "translated"),
    ("geoseg/io/remote.py", "storage_errors", "translated"),
    ("geoseg/io/output.py", "attrs", "translated"),
    # translate() of an OSError EROFS / EACCES: the ReadOnly / StorageAccessError a write would meet
    ("geoseg/jobs/checks.py", "check_writable", "remote.translate"),
    # a chunked HTTP body past its deadline: the TimeoutError asyncio.wait_for raises for a
    # declared size, which the retry loop reads as a transient failure
    ("geoseg/io/remote.py", "_paced", "TimeoutError"),
    # the first failure GDAL hid, re-raised as it was caught (its cause tells whether to retry)
    ("geoseg/io/remote.py", "guarded_reads", "failures[0]"),
    # re-raises the OSError its caller caught, when it is not a failed write condition
    ("geoseg/jobs/lease.py", "_precondition_failed", "exc"),
    # the AttributeError of a module's __getattr__ (PEP 562), raised by its helper
    ("geoseg/_lazy.py", "_submodule", "AttributeError"),
    # after a loop that always returns or raises
    ("geoseg/io/remote.py", "_retry_loop", "AssertionError"),
    # a batch's stop, and SIGTERM, as the Ctrl-C a run already ends on (tasks cancelled, output
    # marked interrupted, leases released)
    ("geoseg/jobs/batch.py", "_stop_point", "KeyboardInterrupt"),
    ("geoseg/core/interrupts.py", "raise_terminated", "Terminated"),
    # a signal taken once the run was complete: a KeyboardInterrupt, so that it stops as one
    ("geoseg/jobs/runner.py", "_publish", "interrupts.StoppedOnceComplete"),
    ("geoseg/cli.py", "_completed", "StoppedOnceComplete"),
    # train(max_steps=N)'s stop after step N, caught in run_epochs: it never leaves train()
    ("geoseg/training/trainer.py", "after_step", "_StepLimit"),
}


def _geoseg_error(name: str) -> bool:
    found = getattr(errors, name.rsplit(".", 1)[-1], None)
    return isinstance(found, type) and issubclass(found, errors.GeosegError)


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _returns() -> dict[str, str]:
    """``module.function`` -> its return annotation, for every top-level function in geoseg."""
    found = {}
    for path in PACKAGE.rglob("*.py"):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.FunctionDef) and node.returns is not None:
                found[f"{_module_name(path)}.{node.name}"] = ast.unparse(node.returns)
    return found


RETURNS = _returns()


def _imports(tree: ast.Module, path: Path) -> dict[str, str]:
    """Local name -> dotted name of what a module imports (absolute or relative)."""
    names = {}
    package = _module_name(path if path.name == "__init__.py" else path.parent / "__init__.py")
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*up, *([base] if base else [])])
            for alias in node.names:
                names[alias.asname or alias.name] = f"{base}.{alias.name}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                names[alias.asname or alias.name.split(".")[0]] = alias.name
    return names


class _Raises(ast.NodeVisitor):
    """Collect ``(line, raised, function)`` for every raise that is not a geoseg error."""

    def __init__(self, path: Path, tree: ast.Module):
        self.rel = path.relative_to(PACKAGE.parent).as_posix()
        self.module = _module_name(path)
        self.imports = _imports(tree, path)
        self.stack: list[ast.AST] = []  # enclosing functions and try/except blocks
        self.offenders: list[str] = []

    def generic_visit(self, node: ast.AST) -> None:
        self.stack.append(node)
        super().generic_visit(node)
        self.stack.pop()

    def visit_Raise(self, node: ast.Raise) -> None:
        if node.exc is None:
            return  # bare raise: re-raises what was caught
        function = self._function()
        text = ast.unparse(node.exc.func if isinstance(node.exc, ast.Call) else node.exc)
        if (self.rel, getattr(function, "name", ""), text) in ALLOWED_SITES:
            return
        if not self._ok(node.exc, function, node):
            self.offenders.append(f"{self.rel}:{node.lineno}: raise {text}")

    def _function(self) -> ast.FunctionDef | ast.AsyncFunctionDef | None:
        funcs = [n for n in self.stack if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
        return funcs[-1] if funcs else None

    def _ok(self, exc: ast.expr, function, node: ast.Raise, depth: int = 0) -> bool:
        if depth > 3:
            return False
        if isinstance(exc, ast.Call) and _is_type_call(exc.func):
            return self._caught(exc.func.args[0], function)  # type(exc)(...): the caught type
        target = exc.func if isinstance(exc, ast.Call) else exc
        if isinstance(target, ast.Name) and _error_class_parameter(function, target.id):
            return True  # the caller's choice of geoseg error class
        if isinstance(exc, ast.Name) and not _is_class_name(exc.id):
            if self._caught(exc, function):
                return True  # the caught exception itself
            values = _assigned(function, exc.id)
            return bool(values) and all(self._ok(v, function, node, depth + 1) for v in values)
        name = ast.unparse(target)
        if self._resolves_to_geoseg_error(name):
            return True
        return self._allowed_builtin(name.rsplit(".", 1)[-1], function, node)

    def _resolves_to_geoseg_error(self, name: str) -> bool:
        head, _, rest = name.partition(".")
        dotted = self.imports.get(head, f"{self.module}.{head}") + (f".{rest}" if rest else "")
        if name in ALLOWED_CLASSES:
            return True
        if dotted.startswith("geoseg.") and _geoseg_error(dotted):
            return True  # from geoseg.errors, or re-exported by a geoseg package
        returns = RETURNS.get(dotted)  # a factory: what its annotation says it returns
        return returns is not None and _geoseg_error(returns)

    def _allowed_builtin(self, name: str, function, node: ast.Raise) -> bool:
        if name == "NotImplementedError" and _abstract(function):
            return True
        if (getattr(function, "name", ""), name) in PROTOCOLS:
            return True
        if name in VALIDATOR_EXCEPTIONS and _decorated(function, VALIDATOR_DECORATORS):
            return True
        return self._handled_here(name, node)

    def _handled_here(self, name: str, node: ast.Raise) -> bool:
        """A built-in raised inside a ``try`` of the same function whose handler catches it:
        control flow, turned into a geoseg error by that handler."""
        raised = getattr(builtins, name, None)
        if not (isinstance(raised, type) and issubclass(raised, BaseException)):
            return False
        for block in reversed(self.stack):
            if isinstance(block, (ast.FunctionDef, ast.AsyncFunctionDef)):
                return False
            if (isinstance(block, ast.Try) and _inside(node, block.body)
                    and any(_catches(h, raised) for h in block.handlers)):
                return True
        return False

    def _caught(self, exc: ast.expr, function) -> bool:
        if not isinstance(exc, ast.Name) or function is None:
            return False
        return any(isinstance(h, ast.ExceptHandler) and h.name == exc.id
                   for h in ast.walk(function))


def _is_type_call(func: ast.expr) -> bool:
    return isinstance(func, ast.Call) and isinstance(func.func, ast.Name) and func.func.id == "type"


def _error_class_parameter(function, name: str) -> bool:
    """Whether ``name`` is a parameter of ``function`` typed ``type[X]``, X a geoseg error."""
    if function is None:
        return False
    arguments = function.args
    for arg in [*arguments.posonlyargs, *arguments.args, *arguments.kwonlyargs]:
        note = arg.annotation
        if (arg.arg == name and isinstance(note, ast.Subscript) and ast.unparse(note.value) == "type"
                and _geoseg_error(ast.unparse(note.slice))):
            return True
    return False


def _is_class_name(name: str) -> bool:
    return name[:1].isupper()


def _assigned(function, name: str) -> list[ast.expr]:
    if function is None:
        return []
    return [n.value for n in ast.walk(function) if isinstance(n, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == name for t in n.targets)]


def _abstract(function) -> bool:
    if function is None:
        return False
    if _decorated(function, {"abstractmethod"}):
        return True
    body = [s for s in function.body if not (isinstance(s, ast.Expr)
                                              and isinstance(s.value, ast.Constant))]
    return len(body) == 1 and isinstance(body[0], ast.Raise)


def _decorated(function, names: set[str]) -> bool:
    if function is None:
        return False
    for decorator in function.decorator_list:
        target = decorator.func if isinstance(decorator, ast.Call) else decorator
        if ast.unparse(target).rsplit(".", 1)[-1] in names:
            return True
    return False


def _inside(node: ast.AST, body: list[ast.stmt]) -> bool:
    return any(node is n for stmt in body for n in ast.walk(stmt))


def _catches(handler: ast.ExceptHandler, raised: type) -> bool:
    if handler.type is None:
        return True
    types = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
    for t in types:
        caught = getattr(builtins, ast.unparse(t), None)
        if isinstance(caught, type) and issubclass(raised, caught):
            return True
    return False


def offenders() -> list[str]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        visitor = _Raises(path, tree)
        visitor.visit(tree)
        found += visitor.offenders
    return found


def test_every_raise_in_geoseg_is_a_geoseg_error():
    found = offenders()
    assert not found, (f"{len(found)} raise(s) of exceptions that are not GeosegError subclasses "
                       "(use or add a class in geoseg/errors.py):\n" + "\n".join(found))


# --- through the command --------------------------------------------------------------------


def _job(tmp_path: Path, model: dict) -> Path:
    scene = write_zarr(tmp_path / "scene.zarr", textured_image(130, 120))
    spec = job_dict(str(scene), "unused", str(tmp_path / "mask.zarr"))
    spec["model"] = model
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _assert_clean(result: subprocess.CompletedProcess, *needles: str) -> None:
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert "Traceback" not in output and "internal error" not in output, output
    for needle in needles:
        assert needle in " ".join(result.stderr.split()), output


@pytest.mark.timeout(120)
def test_unsorted_thresholds_are_one_clean_message_from_validate(tmp_path):
    job = _job(tmp_path, {"method": "threshold", "params": {"thresholds": [0.8, 0.2]}})
    _assert_clean(geoseg_cli("validate", str(job)), "thresholds must be one or more strictly increasing",
                  "got [0.8, 0.2]", "sort them")


@pytest.mark.timeout(120)
def test_a_bad_kmeans_n_init_is_one_clean_message_from_run(tmp_path):
    job = _job(tmp_path, {"method": "kmeans", "params": {"k": 2, "n_init": 0}})
    said = ("model.params.n_init: received 0", "expected a whole number >= 1")
    _assert_clean(geoseg_cli("run", str(job)), *said)
    assert not (tmp_path / "mask.zarr").exists()
    _assert_clean(geoseg_cli("validate", str(job)), *said)


def test_the_new_errors_still_are_the_built_ins_they_replace():
    from geoseg.methods.threshold import Threshold

    with pytest.raises(errors.MethodParameterError) as caught:
        Threshold(thresholds=(0.8, 0.2))
    assert isinstance(caught.value, ValueError) and isinstance(caught.value, errors.GeosegError)
    for name in ("ParameterError", "MethodParameterError", "ModelConfigError"):
        assert issubclass(getattr(errors, name), errors.GeosegError)
        assert issubclass(getattr(errors, name), ValueError)
