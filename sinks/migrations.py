"""The history schema's migrations: config/migrations/NNNN_name.sql, applied in version order and
recorded in `schema_migrations` (HistoryStore.init_schema)."""
from __future__ import annotations

import re
from pathlib import Path

from sinks.base import HistoryError
from sinks.history_columns import STR, TIME, Column

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "config" / "migrations"

MIGRATIONS_TABLE_DDL = ("CREATE TABLE IF NOT EXISTS schema_migrations (version String, name String, "
                        "applied_at DateTime('UTC')) ENGINE = MergeTree() ORDER BY version")


def migration_files() -> list[tuple[str, str, list[str]]]:
    """[(version, name, statements)] from config/migrations/NNNN_name.sql, in version order."""
    out = []
    for path in sorted(MIGRATIONS_DIR.glob("*.sql")):
        m = re.match(r"^(\d{4})_(\w+)\.sql$", path.name)
        if not m:
            raise HistoryError(f"migration file {path} must be named NNNN_name.sql")
        out.append((m.group(1), path.stem, split_statements(path.read_text())))
    return out


def split_statements(text: str) -> list[str]:
    # Our DDL has no ';' inside literals, so a ';' ending a line ends a statement.
    body = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("--"))
    return [s.strip() for s in re.split(r";\s*(?:\n|$)", body) if s.strip()]


_ADD_COLUMN = re.compile(r"^ALTER\s+TABLE\s+(\w+)\s+ADD\s+COLUMN\s+(\w+)\s", re.IGNORECASE)


def added_column(statement: str) -> tuple[str, str] | None:
    """(table, column) of an `ALTER TABLE t ADD COLUMN c ...`, else None. ClickHouse 18.16 has no
    ADD COLUMN IF NOT EXISTS, so init_schema skips one whose column is there already: a migration
    interrupted after it (0200_geo adds two) can run again instead of failing on 'already exists'."""
    m = _ADD_COLUMN.match(statement.strip())
    return (m.group(1), m.group(2)) if m else None


MIGRATION_COLUMNS = (Column("version", "version", STR), Column("name", "name", STR),
                     Column("applied_at", "applied_at", TIME))
