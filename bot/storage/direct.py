"""A turn's usual writes, handed straight to the database driver, together.

Nearly every turn changes the person (the update ids that recognise a second delivery,
often a setting) and the run of the flow they are in (its step, its answers), and many
keep a reflection. Through the ORM's flush each of those cost about 0.12 ms of Python
(working out what changed, ordering, parameters, post-processing) and through Core
about 0.05 ms, against 0.01-0.02 ms for the statement in the driver. On PostgreSQL each
statement is also a round trip. So:

- `DirectWriter` listens for the session's `before_flush` and writes changed people and
  runs itself: an UPDATE of just the changed columns (plus `updated_at`), compiled once
  per set of columns. Runs keep their optimistic lock: the UPDATE names the version read,
  and if the row has moved on, `StaleDataError` is raised exactly as the ORM would.
  Anything else (new rows, deletions, other tables, a changed key) is left to the ORM's
  flush, which runs right after.
- New rows nothing in the turn needs back, and that refer to no row the ORM has yet to
  insert (a reflection), are queued with `RowInsert.queue` and written with those
  UPDATEs; so are deletions nothing waits on (`RowsDelete.queue`: a person's due jobs
  cancelled). They are written before any query the session runs that could see them,
  and before it commits, so nothing reads around them.
- On PostgreSQL, a flush's writes go out as one statement (each a data-modifying WITH
  query), one round trip for all; on SQLite, one after another.
- `DriverStatement` is a Core statement compiled once per database dialect, its values
  converted as the column types would (encryption included) and run by the driver
  itself (or, for the scheduler's batches, with `exec_driver_sql`).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

from sqlalchemy import (
    Table,
    bindparam,
    delete,
    event,
    func,
    insert,
    inspect,
    literal_column,
    select,
    update,
)
from sqlalchemy.engine import CursorResult, Dialect
from sqlalchemy.orm import Mapper, ORMExecuteState, Session
from sqlalchemy.orm.exc import StaleDataError
from sqlalchemy.orm.state import InstanceState
from sqlalchemy.sql.util import find_tables
from sqlalchemy.types import TypeEngine
from sqlalchemy.util import await_only

from bot.storage.models import FlowRun, User

# Mapped classes written here: one table each, an integer key "id", no relationships.
DIRECT_CLASSES: tuple[type, ...] = (User, FlowRun)
# session.info key of the rows queued to be written with the session's next writes.
QUEUED = "haven_queued_rows"
# At most this many combinations of writes are kept compiled (there are a few dozen).
COMBINATIONS_KEPT = 512


def _same(value: Any) -> Any:
    return value


class DriverStatement:
    """A Core statement with named parameters, compiled once per dialect and run with
    `exec_driver_sql` (no SQLAlchemy work per call beyond the driver's).

    `types` gives parameters' column types, so their values go in as Core would send them:
    encrypted, JSON-encoded, or as SQLite's text for times. Other values go in as given.
    Rows come back as the driver gives them, unless `results` gives the type of each
    column to be converted as Core would (None: as given).
    """

    def __init__(self, statement: Any,
                 types: Mapping[str, TypeEngine[Any]] | None = None,
                 results: Sequence[TypeEngine[Any] | None] = ()) -> None:
        self.statement = statement
        self.types = types or {}
        self.results = tuple(results)
        # The tables it reads or writes (None: unknown, so any): only writes to these are
        # made before it (see `rows`).
        self.tables = frozenset(table for table in find_tables(
            statement, include_crud=True, include_joins=True, check_columns=True)
            if isinstance(table, Table)) or None
        # By dialect object, not name: the encryption key travels on the dialect, so two
        # databases in one process (as in the tests, or key rotation) differ here.
        self._compiled: weakref.WeakKeyDictionary[Dialect, _Compiled] = (
            weakref.WeakKeyDictionary())

    def _for(self, dialect: Dialect) -> _Compiled:
        found = self._compiled.get(dialect)
        if found is None:
            compiled = self.statement.compile(dialect=dialect)
            order: list[tuple[str, Callable[[Any], Any]]] = []
            for name in compiled.positiontup or []:
                type_ = self.types.get(name)
                convert = (type_.dialect_impl(dialect).bind_processor(dialect)
                           if type_ is not None else None)
                order.append((name, convert or _same))
            results = [type_.dialect_impl(dialect).result_processor(dialect, None)
                       if type_ is not None else None for type_ in self.results]
            found = _Compiled(str(compiled), order, dict(compiled.params),
                              tuple(results) if any(results) else None)
            self._compiled[dialect] = found
        return found

    def run(self, session: Session,
            values: Mapping[str, Any]) -> CursorResult[*tuple[Any, ...]]:
        if session.info.get(QUEUED):
            write_all(session)
        return self.run_now(session, values)

    def run_now(self, session: Session,
                values: Mapping[str, Any]) -> CursorResult[*tuple[Any, ...]]:
        """Run without first writing the session's queued rows."""
        connection = session.connection()
        return connection.exec_driver_sql(*self.bound(connection.dialect, values))

    def rows(self, session: Session, values: Mapping[str, Any],
             written: bool = True) -> Sequence[Sequence[Any]]:
        """The rows, as the driver gives them. First, as an ORM query would (`written`),
        whatever the session has yet to write is written if any of it touches the tables
        the statement reads (or it inserts or deletes with the ORM): nothing is read
        around it. Other changes wait for a later statement, or the commit: each write
        before a read is a round trip on PostgreSQL.

        The statement goes to the driver itself: on PostgreSQL SQLAlchemy's adapter (its
        cursor emulation), and on SQLite its result (built anew for each call), cost more
        than the statement. Its errors are then the driver's own, which the unit of work's
        transaction (bot.storage.transaction) handles as it does those of BEGIN and COMMIT."""
        if written and session.autoflush and has_writes(session, self.tables):
            write_all(session)
        connection = session.connection()
        compiled = self._for(connection.dialect)
        sql, parameters = compiled.sql, compiled.values(values)
        driver: Any = connection.connection.driver_connection
        if connection.dialect.name == "postgresql":
            rows = await_only(driver.fetch(sql, *parameters))
        else:
            rows = driver.execute(sql, parameters).fetchall()
        if compiled.results is None:
            return rows
        return [tuple(value if to is None else to(value)
                      for to, value in zip(compiled.results, row, strict=True)) for row in rows]

    def row_count(self, session: Session, values: Mapping[str, Any]) -> int:
        """Run a write without first writing the session's queued rows; the rows it changed.
        On SQLite, straight through the driver, as `rows` goes."""
        connection = session.connection()
        if connection.dialect.name != "sqlite":
            return self.run_now(session, values).rowcount
        driver: Any = connection.connection.driver_connection
        return driver.execute(*self.bound(connection.dialect, values)).rowcount

    def bound(self, dialect: Dialect, values: Mapping[str, Any]) -> tuple[str, tuple[Any, ...]]:
        """The SQL for `dialect`, and its parameters' values as the driver takes them."""
        compiled = self._for(dialect)
        return compiled.sql, compiled.values(values)


class _Compiled(NamedTuple):
    sql: str
    order: list[tuple[str, Callable[[Any], Any]]]  # each parameter's name and conversion
    constants: dict[str, Any]  # values the statement itself holds (e.g. a literal "open")
    # Each result column's conversion (None: as given), or None if no column has one.
    results: tuple[Callable[[Any], Any] | None, ...] | None

    def values(self, values: Mapping[str, Any]) -> tuple[Any, ...]:
        """The parameters' values, in order, as the driver takes them."""
        given = {**self.constants, **values} if self.constants else values
        return tuple(convert(given[name]) for name, convert in self.order)


class _Part:
    """One statement among a flush's writes: its Core form with parameters named after
    `prefix`, and those parameters' column types; `alone` runs it by itself."""

    table: Table
    alone: DriverStatement

    def core(self, prefix: str) -> Any:
        raise NotImplementedError

    def types(self, prefix: str) -> dict[str, TypeEngine[Any]]:
        raise NotImplementedError


class _RowUpdate(_Part):
    """UPDATE one row's `keys` WHERE its id (and version) match."""

    def __init__(self, table: Table, version: str | None, keys: tuple[str, ...]) -> None:
        self.table, self.version, self.keys = table, version, keys
        self.alone = DriverStatement(self.core(""), self.types(""))

    def core(self, prefix: str) -> Any:
        columns = self.table.c
        statement = update(self.table).where(columns.id == bindparam(f"{prefix}key_id"))
        if self.version:
            statement = statement.where(
                columns[self.version] == bindparam(f"{prefix}key_version"))
        return statement.values({key: bindparam(f"{prefix}set_{key}") for key in self.keys})

    def types(self, prefix: str) -> dict[str, TypeEngine[Any]]:
        return {f"{prefix}set_{key}": self.table.c[key].type for key in self.keys}


class RowInsert(_Part):
    """INSERT one row of the given columns into `table`, queued to go with the session's
    next writes (see the module's text): for rows nothing in the turn reads back."""

    def __init__(self, table: Table, columns: tuple[str, ...]) -> None:
        self.table, self.columns = table, columns
        given = set(self.core("").compile().params)
        if given != set(columns):  # a default filled in would be named alike in every part
            raise ValueError(f"an INSERT into {table.name} must give {sorted(given)}")
        self.alone = DriverStatement(self.core(""), self.types(""))

    def core(self, prefix: str) -> Any:
        return insert(self.table).values(
            {column: bindparam(f"{prefix}{column}") for column in self.columns})

    def types(self, prefix: str) -> dict[str, TypeEngine[Any]]:
        return {f"{prefix}{column}": self.table.c[column].type for column in self.columns}

    def queue(self, session: Session, values: dict[str, Any]) -> None:
        session.info.setdefault(QUEUED, []).append(_Write(self, values))


class RowsDelete(_Part):
    """DELETE the rows of `table` whose `keys` columns hold the values given, and whose
    `fixed` columns hold these values; queued as RowInsert's rows are, for deletions
    nothing in the turn waits on."""

    def __init__(self, table: Table, keys: tuple[str, ...],
                 fixed: Mapping[str, Any] | None = None) -> None:
        self.table, self.keys, self.fixed = table, keys, dict(fixed or {})
        self.alone = DriverStatement(self.core(""), self.types(""))

    def core(self, prefix: str) -> Any:
        columns = self.table.c
        return delete(self.table).where(
            *(columns[key] == bindparam(f"{prefix}{key}") for key in self.keys),
            *(columns[key] == value for key, value in self.fixed.items()))

    def types(self, prefix: str) -> dict[str, TypeEngine[Any]]:
        return {f"{prefix}{key}": self.table.c[key].type for key in self.keys}

    def queue(self, session: Session, values: dict[str, Any]) -> None:
        if set(values) != set(self.keys):
            raise ValueError(f"a DELETE from {self.table.name} is by {sorted(self.keys)}")
        queued: list[_Write] = session.info.get(QUEUED) or []
        if _orm_writes(session, frozenset((self.table,))) or any(
                write.part.table is self.table and not isinstance(write.part, RowsDelete)
                for write in queued):
            # What came before it on its table is written before it: the writes queued
            # together go as one statement on PostgreSQL, where none sees another's rows
            # (deletions alone may go together: either order leaves the same rows).
            write_all(session)
        session.info.setdefault(QUEUED, []).append(_Write(self, values))


class _Write(NamedTuple):
    part: _Part
    values: dict[str, Any]  # parameters by their unprefixed names
    rows_expected: int | None = None  # an UPDATE's 1: fewer means the row moved on


class _TableWrites:
    """What writing one mapped class needs: its table, key, version and `onupdate` columns."""

    def __init__(self, cls: type) -> None:
        mapper: Mapper[Any] = inspect(cls)
        self.table: Table = mapper.local_table  # type: ignore[assignment]
        self.version = mapper.version_id_col.key if mapper.version_id_col is not None else None
        # Column attributes and columns share their names in these models.
        self.on_update: dict[str, Callable[[Any], Any]] = {
            column.key: column.onupdate.arg  # type: ignore[attr-defined]  # a CallableColumnDefault
            for column in self.table.columns
            if column.onupdate is not None and column.onupdate.is_callable}
        self.fixed = {"id", *([self.version] if self.version else [])}
        self._updates: dict[tuple[str, ...], _RowUpdate] = {}

    def update(self, keys: tuple[str, ...]) -> _RowUpdate:
        """UPDATE ... SET the `keys` WHERE id (and version) match; built once per key set."""
        found = self._updates.get(keys)
        if found is None:
            found = self._updates[keys] = _RowUpdate(self.table, self.version, keys)
        return found


class DirectWriter:
    """Writes changed people and flow runs, with queued rows, before the ORM's flush (see
    the module's text)."""

    def __init__(self) -> None:
        self._tables = {cls: _TableWrites(cls) for cls in DIRECT_CLASSES}

    def listen(self, sessions: Any) -> None:
        """Attach to a sessionmaker (or Session class) for every session it makes."""
        event.listen(sessions, "before_flush", self.before_flush)
        event.listen(sessions, "do_orm_execute", _before_query)
        event.listen(sessions, "before_commit", write_all)

    def before_flush(self, session: Session, _context: Any, _objects: Any) -> None:
        writes: list[_Write] = []
        written: list[tuple[InstanceState[Any], dict[str, Any]]] = []
        for obj in session.dirty:
            table = self._tables.get(type(obj))
            if table is not None:
                state: InstanceState[Any] = inspect(obj)
                change = self._change(table, state, writes)
                if change is not None:
                    written.append((state, change))
        writes += session.info.pop(QUEUED, ())
        _send(session, writes)
        for state, changed in written:
            # What is in memory is now what is stored: nothing left for the ORM to write.
            # (InstanceState._commit_all is the ORM's own step after a flush; no public
            # equivalent marks an object clean.)
            values = state.dict
            values.update(changed)
            state._commit_all(values, session.identity_map)

    def _change(self, table: _TableWrites, state: InstanceState[Any],
                writes: list[_Write]) -> dict[str, Any] | None:
        """The columns to set on the object's row (adding its UPDATE to `writes` if there
        are any), or None if the ORM's flush is to write it."""
        if state.key is None or state.deleted or state.detached:
            return None
        values = state.dict
        changed: dict[str, Any] = {}
        for key, before in state.committed_state.items():
            if key not in values or key in table.fixed:
                return None  # unloaded, or a key or version set by hand: the ORM's to write
            now = values[key]
            if now is not before and now != before:
                changed[key] = now
        if changed:
            for key, make in table.on_update.items():
                changed.setdefault(key, make(None))
            parameters = {f"set_{key}": value for key, value in changed.items()}
            parameters["key_id"] = values["id"]
            if table.version:
                read = values[table.version]
                changed[table.version] = parameters[f"set_{table.version}"] = read + 1
                parameters["key_version"] = read
            writes.append(_Write(table.update(tuple(sorted(changed))), parameters, 1))
        return changed


def write_all(session: Session) -> None:
    """Write everything the session holds: changed objects, then any rows still queued."""
    session.flush()
    queued = session.info.pop(QUEUED, None)
    if queued:
        _send(session, queued)


def has_writes(session: Session, tables: frozenset[Table] | None = None) -> bool:
    """Whether the session holds changes or rows it has yet to write: any (`tables` None),
    or any that could change what a statement on `tables` finds. New and deleted objects
    always count: another row may refer to them."""
    queued: list[_Write] = session.info.get(QUEUED) or []
    if tables is None:
        return bool(queued) or _orm_writes(session, None)
    return any(write.part.table in tables for write in queued) or _orm_writes(session, tables)


def _orm_writes(session: Session, tables: frozenset[Table] | None) -> bool:
    """`has_writes`, of the objects the session holds only."""
    if session.new or session.deleted:
        return True
    if tables is None:
        return bool(session.dirty)
    return any(inspect(obj).mapper.local_table in tables for obj in session.dirty)


def _before_query(orm_execute_state: ORMExecuteState) -> None:
    if orm_execute_state.session.info.get(QUEUED):
        write_all(orm_execute_state.session)


def _send(session: Session, writes: list[_Write]) -> None:
    if not writes:
        return
    if session.get_bind().dialect.name != "postgresql":
        for write in writes:
            _check(write, write.part.alone.row_count(session, write.values))
        return
    combined = _combined(tuple(write.part for write in writes))
    values: dict[str, Any] = {}
    for index, write in enumerate(writes):
        values.update({f"w{index}_{name}": value for name, value in write.values.items()})
    (counts,) = combined.rows(session, values, written=False)  # each part's row count
    for write, count in zip(writes, counts, strict=True):
        _check(write, count)


def _check(write: _Write, rows: int) -> None:
    if write.rows_expected is not None and rows != write.rows_expected:
        raise StaleDataError(
            f"UPDATE of {write.part.table.name} id {write.values['key_id']} matched {rows} rows: "
            "it changed since it was read")


_COMBINED: dict[tuple[_Part, ...], DriverStatement] = {}


def _combined(parts: tuple[_Part, ...]) -> DriverStatement:
    """One PostgreSQL statement for all `parts`: each a WITH query, and the row count of
    each the result (parameters of part i are prefixed "w<i>_")."""
    found = _COMBINED.get(parts)
    if found is None:
        queries = [part.core(f"w{index}_").returning(literal_column("1")).cte(f"w{index}")
                   for index, part in enumerate(parts)]
        types: dict[str, TypeEngine[Any]] = {}
        for index, part in enumerate(parts):
            types.update(part.types(f"w{index}_"))
        statement = select(*(select(func.count()).select_from(query).scalar_subquery()
                             for query in queries))
        if len(_COMBINED) >= COMBINATIONS_KEPT:
            _COMBINED.clear()
        found = _COMBINED[parts] = DriverStatement(statement, types)
    return found
