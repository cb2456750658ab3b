"""Which environment variables the code reads, found in the code itself: what deployment files are checked against.

``read_names()`` parses (never imports) every module under ``services/`` and ``shared/`` and the tools that run in the
pods, and collects the names read from the environment: ``os.environ.get(NAME)``, ``os.environ[NAME]``,
``os.getenv(NAME)`` and the literal names given to any function that hands one of its parameters on to those (or to
an ``environ`` mapping's ``.get``, or to another such function): ``env_or(NAME, ...)``, ``_flag(NAME)``,
``_get(environ, NAME)``, ``_subkey(secret, NAME, ...)``, a module's local ``get(NAME, default)``, found by fixpoint.
To that come the names built from tables (the import limits, the storage backends' ``<KIND>_<KEY>``), the
``${NAME...}`` of ``deploy/nameko.yml`` and the ``Dockerfile``, and the few variables libraries read themselves.

``required_names()``: the settings a deployment must set, declared next to the code that reads them as a module-level
``DEPLOYMENT_REQUIRED = ("NAME", ...)`` (their defaults only fit one machine), plus the Dockerfile's ``${NAME:?...}``.

A new setting (``WEBHOOK_*``, ``DRAIN_DEADLINE``) read through any of these readers is picked up with no change here.
Run ``python -m tools.settings_inventory`` to list them.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CODE_DIRS = ("services", "shared")
POD_TOOLS = ("tools/cli.py", "tools/probe.py")  # what the image runs besides the services
TEMPLATES = ("deploy/nameko.yml", "Dockerfile")

# Readers known by name (getenv: os.getenv); the others are found in the code (``_readers``).
BASE_READERS = {"getenv": 0}
# Read by libraries, not by our code: boto3 takes the S3 keys of the default backend from these.
LIBRARY_READS = frozenset({"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"})

_NAME = re.compile(r"^[A-Z][A-Z0-9_]*$")
_TEMPLATE_VAR = re.compile(r"\$\{([A-Z][A-Z0-9_]*)(:\?)?")


def _modules() -> Iterator[Path]:
    for folder in CODE_DIRS:
        yield from sorted((REPO / folder).rglob("*.py"))
    for tool in POD_TOOLS:
        path = REPO / tool
        if path.exists():
            yield path


def _is_os_environ(node: ast.AST) -> bool:
    return isinstance(node, ast.Attribute) and node.attr == "environ"


def _is_mapping_read(node: ast.Call) -> bool:
    """``<x>.get(...)`` on ``os.environ`` or on a name called ``environ`` (a mapping passed in for tests)."""
    func = node.func
    return isinstance(func, ast.Attribute) and func.attr == "get" and (
        _is_os_environ(func.value) or (isinstance(func.value, ast.Name) and func.value.id == "environ"))


def _literal_name(node: ast.AST | None) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str) and _NAME.match(node.value):
        return node.value
    return None


def _call_name(node: ast.Call) -> str:
    return node.func.id if isinstance(node.func, ast.Name) else ""


def _readers(trees: list[ast.AST]) -> dict[str, int]:
    """Function name -> position of the variable name among its arguments, for every function that passes one of its
    parameters on to ``os.environ`` (``.get``, ``[...]``), to an ``environ`` mapping's ``.get`` or to another reader:
    ``env_or(name, default)``, ``_flag(name)``, ``_get(environ, name)``, a module's local ``get(name, default)``."""
    readers = dict(BASE_READERS)
    functions = [f for tree in trees for f in ast.walk(tree) if isinstance(f, ast.FunctionDef | ast.AsyncFunctionDef)]
    changed = True
    while changed:
        changed = False
        for function in functions:
            params = [a.arg for a in function.args.posonlyargs + function.args.args]
            if function.name in readers or not params:
                continue
            for node in ast.walk(function):
                passed = None
                if isinstance(node, ast.Subscript) and _is_os_environ(node.value):
                    passed = node.slice
                elif isinstance(node, ast.Call) and _is_mapping_read(node) and node.args:
                    passed = node.args[0]
                elif isinstance(node, ast.Call) and _call_name(node) in readers:
                    position = readers[_call_name(node)]
                    passed = node.args[position] if len(node.args) > position else None
                if isinstance(passed, ast.Name) and passed.id in params:
                    readers[function.name] = params.index(passed.id)
                    changed = True
                    break
    return readers


def _names_in(tree: ast.AST, readers: dict[str, int]) -> Iterator[str]:
    for node in ast.walk(tree):
        found = None
        if isinstance(node, ast.Subscript) and _is_os_environ(node.value):
            found = _literal_name(node.slice)
        elif isinstance(node, ast.Call) and _is_os_environ(getattr(node.func, "value", None)) and node.args:
            found = _literal_name(node.args[0])  # os.environ.get(NAME)
        elif isinstance(node, ast.Call) and _call_name(node) in readers:
            position = readers[_call_name(node)]
            found = _literal_name(node.args[position]) if len(node.args) > position else None
        if found:
            yield found


def _declared_required(tree: ast.AST) -> Iterator[str]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "DEPLOYMENT_REQUIRED"
                                                for t in node.targets):
            yield from ast.literal_eval(node.value)


def _dict_literal(path: str, name: str) -> ast.Dict:
    """The dict literal assigned to ``name`` at the top of module ``path`` (read, not imported: tools do not import
    services)."""
    for node in ast.parse((REPO / path).read_text()).body:
        target = node.target if isinstance(node, ast.AnnAssign) else (node.targets[0] if isinstance(node, ast.Assign)
                                                                      else None)
        if isinstance(target, ast.Name) and target.id == name and isinstance(node.value, ast.Dict):
            return node.value
    raise LookupError(f"{path} has no dict literal {name}")


def _keys(node: ast.AST) -> list[str]:
    return [k.value for k in getattr(node, "keys", []) if isinstance(k, ast.Constant) and isinstance(k.value, str)]


def _table_names() -> set[str]:
    """Variables whose names the code builds from tables rather than spelling out: the import limits, and the default
    storage backend's ``<KIND>_<KEY>`` (``services/storage/settings.py``)."""
    names = set(_keys(_dict_literal("shared/config.py", "IMPORT_LIMIT_VARIABLES")))
    fields = _dict_literal("services/storage/records/config.py", "FIELDS")
    for kind, table in zip(_keys(fields), fields.values, strict=True):
        names |= {f"{kind.upper()}_{key.upper()}" for key in _keys(table)}
    return names


def _template_vars() -> dict[str, bool]:
    """``${NAME}`` of the templates -> whether it is required (``${NAME:?...}``)."""
    found: dict[str, bool] = {}
    for template in TEMPLATES:
        text = "\n".join(line for line in (REPO / template).read_text().splitlines()
                         if not line.lstrip().startswith("#"))
        for match in _TEMPLATE_VAR.finditer(text):
            found[match.group(1)] = found.get(match.group(1), False) or bool(match.group(2))
    return found


def _trees() -> list[ast.AST]:
    return [ast.parse(path.read_text(), filename=str(path)) for path in _modules()]


def read_names() -> frozenset[str]:
    """Every environment variable the services (and the tools run in their pods) read."""
    names: set[str] = set(LIBRARY_READS) | _table_names() | set(_template_vars())
    trees = _trees()
    readers = _readers(trees)
    for tree in trees:
        names.update(_names_in(tree, readers))
    return frozenset(names)


def required_names() -> frozenset[str]:
    """The settings every service container of a deployment must set."""
    names = {name for name, required in _template_vars().items() if required}
    for tree in _trees():
        names.update(_declared_required(tree))
    return frozenset(names)


if __name__ == "__main__":
    required = required_names()
    for variable in sorted(read_names()):
        print(variable + ("  (required)" if variable in required else ""))
