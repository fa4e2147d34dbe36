"""The store is the one door to revisions: which are current, live, the latest, the reference.

Outside `pipeline/store/`, no module (benchmarks included) builds a query over `Revision`, makes a
`Revision` row, reads one by id from a session, or opens the database file with sqlite3: each asks
`Store` (`current_labels`, `latest_revisions`, `reference_revisions`, `ground_truth`,
`revisions_for`, `add_revision`, ...), so the rules (revoked labels, people over models) live in
one place. docs/architecture.md lists the queries.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("schemas", "synthetic", "pipeline", "annotation", "flows", "bench")
#: Modules that may use sqlite3 on a file of their own (not the store's tables), and why.
SQLITE_FILES = {
    "pipeline/annotators/cache.py": "the pose cache is its own SQLite file beside the store",
    "pipeline/backup.py": "copies the database file whole (SQLite's backup API), reads no table",
}


def _mentions_revision(node: ast.AST) -> bool:
    return any(isinstance(n, ast.Name) and n.id == "Revision" for n in ast.walk(node))


def back_doors(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    name_of = str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else path.name
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        where = f"{name_of}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.Call):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
            if name == "select" and any(_mentions_revision(a) for a in node.args):
                found.append((node.lineno, f"{where}: select(Revision ...)"))
            elif name == "Revision":
                found.append((node.lineno, f"{where}: Revision(...) written directly"))
            elif name == "get" and node.args and _mentions_revision(node.args[0]):
                found.append((node.lineno, f"{where}: session.get(Revision, ...)"))
        elif isinstance(node, ast.Import | ast.ImportFrom):
            names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
            if "sqlite3" in names and name_of not in SQLITE_FILES:
                found.append((node.lineno, f"{where}: sqlite3 (raw SQL on the store's file)"))
    return [hit for _line, hit in sorted(found)]


def test_no_module_outside_the_store_reads_or_writes_revisions_itself() -> None:
    found = [hit for pkg in PACKAGES for path in sorted((ROOT / pkg).rglob("*.py"))
             if "store" not in path.relative_to(ROOT).parts[1:2] for hit in back_doors(path)]
    assert not found, "ask the Store instead:\n" + "\n".join(found)


def test_the_check_sees_a_back_door(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("import sqlite3\nfrom sqlalchemy import select\nq = select(Revision.id)\n"
                      "s.add(Revision(instance_id=1))\nrev = s.get(Revision, 3)\n")
    hits = back_doors(sample)
    assert [h.split(": ", 1)[1] for h in hits] == [
        "sqlite3 (raw SQL on the store's file)", "select(Revision ...)", "Revision(...) written directly",
        "session.get(Revision, ...)"]
