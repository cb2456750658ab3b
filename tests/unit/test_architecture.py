"""The layers and who owns which data: bench -> tools -> services -> shared, and each service alone with its tables.

Fails when
- a service imports another service (they talk over RPC and events only: ``shared.contracts``);
- ``shared/`` imports any service, or ``tools/``/``bench/`` import from ``services/`` (the shared code they need,
  password hashes for instance, lives in ``shared/``);
- a service (or shared code) uses a model of a table another service owns, or names such a table in SQL text.
Event data (users, roles, events and their records) is everyone's: exporter and importer read and write it.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

from shared.models.base import Base

REPO = Path(__file__).resolve().parents[2]
SERVICES = ("api_gateway", "exporter", "importer", "mailer", "storage", "webhooks")

# table -> the code that owns it: a service, or "jobs" (the job lifecycle in shared/jobs, used by the two workers)
TABLE_OWNERS = {
    "tasks": "api_gateway",
    "login_throttle": "api_gateway",
    "imported_events": "importer",
    "job_leases": "jobs",
    "mail_deliveries": "mailer",
    "storage_objects": "storage",
    "storage_backends": "storage",
    "webhook_endpoints": "webhooks",
    "webhook_deliveries": "webhooks",
}
# owner -> the code allowed to touch its tables (besides the owner itself)
SHARERS = {"jobs": ("exporter", "importer")}
# shared/models/<module>.py -> the owner of its tables (None: event data, everyone's)
MODULE_OWNERS = {"base": None, "events": None, "gateway": "api_gateway", "importer": "importer", "jobs": "jobs",
                 "mailer": "mailer", "storage": "storage", "webhooks": "webhooks"}


@dataclass(frozen=True)
class Violation:
    path: str
    line: int
    what: str


def _area(root: Path, path: Path) -> str:
    """``services.<name>``, ``shared.jobs``, ``shared``, ``tools``, ``bench`` or ``tests`` for a file."""
    parts = path.relative_to(root).parts
    if parts[0] == "services":
        return f"services.{parts[1]}"
    if parts[0] == "shared" and len(parts) > 2 and parts[1] == "jobs":
        return "shared.jobs"
    return parts[0]


def _owner_of_area(area: str) -> str | None:
    if area.startswith("services."):
        return area.split(".", 1)[1]
    return "jobs" if area == "shared.jobs" else None


def _model_tables() -> dict[str, str]:
    """Model class name -> its table."""
    return {mapper.class_.__name__: mapper.local_table.name for mapper in Base.registry.mappers}


def _imports(tree: ast.AST) -> list[tuple[int, str, list[str]]]:
    """(line, module, imported names) of every import."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module, [alias.name for alias in node.names]))
    return found


def _may_touch_owner(area: str, owner: str) -> bool:
    mine = _owner_of_area(area)
    return mine == owner or mine in SHARERS.get(owner, ())


def _may_touch(area: str, table: str) -> bool:
    owner = TABLE_OWNERS.get(table)
    return owner is None or _may_touch_owner(area, owner)  # None: event data


def check_tree(root: Path) -> list[Violation]:
    tables = _model_tables()
    violations: list[Violation] = []
    for top in ("services", "shared", "tools", "bench"):
        for path in sorted((root / top).rglob("*.py")):
            if "migrations" in path.parts or path.parent == root / "shared" / "models":
                continue  # Alembic and the models package see every table, on purpose (one metadata)
            area = _area(root, path)
            rel = str(path.relative_to(root))
            tree = ast.parse(path.read_text(), filename=rel)
            for line, module, names in _imports(tree):
                if module == "services" or module.startswith("services."):
                    target = ".".join(module.split(".")[:2])
                    if area in ("shared", "shared.jobs", "tools", "bench"):
                        violations.append(Violation(rel, line, f"{area} imports {module}"))
                    elif area.startswith("services.") and target not in (area, "services"):
                        violations.append(Violation(rel, line, f"{area} imports another service: {module}"))
                owned = [module.split(".")[2]] if module.startswith("shared.models.") else []
                owned += [n for n in names if module == "shared.models" and n in MODULE_OWNERS]
                flagged = False
                for part in owned:
                    owner = MODULE_OWNERS.get(part)
                    if owner and area not in ("tools", "bench") and not _may_touch_owner(area, owner):
                        what = f"{area} imports shared.models.{part} (owned by {owner})"
                        violations.append(Violation(rel, line, what))
                        flagged = True
                if not flagged and (module == "shared.models" or module.startswith("shared.models.")):
                    for name in names:
                        table = tables.get(name)
                        if table and area not in ("tools", "bench") and not _may_touch(area, table):
                            owner = TABLE_OWNERS[table]
                            violations.append(Violation(rel, line, f"{area} uses {name} ({table}, owned by {owner})"))
            if area in ("tools", "bench"):
                continue
            for node in ast.walk(tree):  # SQL text naming another owner's table
                if isinstance(node, ast.Constant) and isinstance(node.value, str):
                    words = set(node.value.replace("(", " ").replace(",", " ").split())
                    for table in words & set(TABLE_OWNERS):
                        if not _may_touch(area, table) and (
                                {"from", "into", "update", "join"} & {w.lower() for w in words}):
                            violations.append(Violation(rel, node.lineno, f"{area} names table {table} in SQL"))
    return violations


def test_the_tree_keeps_its_layers_and_owners():
    violations = check_tree(REPO)
    assert violations == [], "\n".join(f"{v.path}:{v.line}: {v.what}" for v in violations)


def test_every_owned_table_exists():
    assert set(TABLE_OWNERS) <= {t.name for t in Base.metadata.sorted_tables}


def test_each_table_lives_in_its_owners_model_module():
    """``shared/models/<owner>.py`` holds exactly the tables ``TABLE_OWNERS`` gives that owner."""
    for mapper in Base.registry.mappers:
        module = mapper.class_.__module__
        assert module.startswith("shared.models."), module
        assert MODULE_OWNERS[module.split(".")[2]] == TABLE_OWNERS.get(mapper.local_table.name), mapper.class_


PLANTED = {
    "services/api_gateway/bad_import.py": ("from services.storage import objects\n", "imports another service"),
    "services/api_gateway/bad_model.py": ("from shared.models.mailer import MailDelivery\n", "owned by mailer"),
    "services/api_gateway/bad_sql.py": ('Q = "SELECT * FROM mail_deliveries"\n', "names table mail_deliveries"),
    "services/exporter/bad_model.py": ("from shared.models import storage\n", "owned by storage"),
    "shared/bad.py": ("import services.mailer.outbox\n", "shared imports services"),
    "tools/bad.py": ("from services.api_gateway.auth import read_token\n", "tools imports services"),
    "bench/bad.py": ("from services.exporter import media\n", "bench imports services"),
}


@pytest.mark.parametrize("planted", sorted(PLANTED))
def test_a_planted_violation_is_found(tmp_path, planted):
    """The check itself: a clean tree passes; each planted violation is reported, with its file and line."""
    for top in ("services/api_gateway", "services/exporter", "services/mailer", "shared", "tools", "bench"):
        (tmp_path / top).mkdir(parents=True, exist_ok=True)
    (tmp_path / "services/api_gateway/ok.py").write_text(
        "from services.api_gateway import rules\nfrom shared.models.events import Event\n"
        "from shared.models.gateway import Task\n")
    (tmp_path / "services/exporter/ok.py").write_text("from shared.models.jobs import JobLease\n")
    assert check_tree(tmp_path) == []
    source, what = PLANTED[planted]
    (tmp_path / planted).write_text(source)
    [violation] = check_tree(tmp_path)
    assert violation.path == planted and violation.line == 1 and what in violation.what
