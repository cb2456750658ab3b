"""Which environment variables the code reads, found in the code itself: what deployment files are checked against.

``read_names()`` parses (never imports) every module under ``services/`` and ``shared/`` and the tools that run in the
pods, and collects the names passed to the environment readers: ``env_or(NAME, ...)``, ``os.environ.get(NAME)``,
``os.environ[NAME]``, ``os.getenv(NAME)``, ``_flag(NAME)``, ``_get(environ, NAME)``, ``_subkey(secret, NAME, ...)``.
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

# reader function name -> position of the variable name among its arguments
READERS = {"env_or": 0, "getenv": 0, "_flag": 0, "_get": 1, "_subkey": 1}
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


def _is_environ(node: ast.AST) -> bool:
    """``os.environ`` (a bare ``environ`` is mostly a WSGI request's, whose keys are no settings)."""
    return isinstance(node, ast.Attribute) and node.attr == "environ"


def _literal_name(node: ast.AST | None) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str) and _NAME.match(node.value):
        return node.value
    return None


def _names_in(tree: ast.AST) -> Iterator[str]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Subscript) and _is_environ(node.value):
            found = _literal_name(node.slice)
            if found:
                yield found
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
        if isinstance(func, ast.Attribute) and func.attr == "get" and _is_environ(func.value):
            position = 0
        elif name in READERS:
            position = READERS[name]
        else:
            continue
        if len(node.args) > position:
            found = _literal_name(node.args[position])
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


def _trees() -> Iterator[ast.AST]:
    for path in _modules():
        yield ast.parse(path.read_text(), filename=str(path))


def read_names() -> frozenset[str]:
    """Every environment variable the services (and the tools run in their pods) read."""
    names: set[str] = set(LIBRARY_READS) | _table_names() | set(_template_vars())
    for tree in _trees():
        names.update(_names_in(tree))
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
