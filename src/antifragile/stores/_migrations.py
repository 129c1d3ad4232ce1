"""Versioned schema migrations for the SQL backends.

Migrations are numbered SQL files in ``antifragile/stores/sql/<dialect>/NNNN_name.sql``, applied
in order, each in its own transaction, and recorded in ``antifragile_migrations``. A database
whose newest applied migration is unknown to this version of antifragile was migrated by a newer
release: :func:`plan` refuses it with :class:`~antifragile.SchemaVersionError` rather than run
old code on a new schema.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib.resources import files

from antifragile.errors import ConfigurationError, SchemaVersionError

MIGRATIONS_TABLE = "antifragile_migrations"
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


def load_migrations(dialect: str) -> list[Migration]:
    """Every migration shipped for *dialect* (``sqlite`` or ``postgres``), in order."""
    folder = files("antifragile.stores").joinpath("sql", dialect)
    found: list[Migration] = []
    for entry in folder.iterdir():
        match = _NAME.match(entry.name)
        if match is None:
            continue
        found.append(Migration(int(match.group(1)), match.group(2), entry.read_text("utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions) or versions != list(range(1, len(versions) + 1)):
        raise ConfigurationError(
            f"{dialect} migrations must be numbered 1..n once each: {versions}"
        )
    return found


def latest_version(dialect: str) -> int:
    migrations = load_migrations(dialect)
    return migrations[-1].version if migrations else 0


def plan(applied: set[int] | list[int], available: list[Migration]) -> list[Migration]:
    """The migrations still to apply; refuses a database migrated by a newer release."""
    applied_set = set(applied)
    known = {m.version for m in available}
    newest = max(known, default=0)
    unknown = sorted(v for v in applied_set if v not in known)
    if unknown:
        raise SchemaVersionError(
            f"the database has schema version {max(unknown)}, newer than this antifragile "
            f"knows ({newest}); upgrade antifragile instead of running an older version on it"
        )
    return [m for m in available if m.version not in applied_set]


def split_statements(sql: str) -> list[str]:
    """Split a migration into statements on ``;`` at line ends (no procedural bodies with
    inner semicolons unless wrapped in ``$$``). Blank and comment lines between statements are
    dropped, so no statement is only a comment."""
    statements: list[str] = []
    current: list[str] = []
    in_dollar = False
    for line in sql.splitlines():
        stripped = line.strip()
        if not current and (not stripped or stripped.startswith("--")):
            continue
        current.append(line)
        if line.count("$$") % 2 == 1:
            in_dollar = not in_dollar
        if not in_dollar and stripped.endswith(";"):
            statement = "\n".join(current).strip()
            if statement.rstrip(";").strip():
                statements.append(statement)
            current = []
    tail = "\n".join(current).strip()
    if tail:
        statements.append(tail)
    return statements
