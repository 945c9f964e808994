"""People and runs read through the database driver and put in the session as loaded.

Every turn reads the person and the run of the flow they are in. Through the ORM that
one query cost about 0.3 ms of Python (the statement's execution context, the result,
each object's loading) against a few hundredths of a millisecond for the statement in
the driver. So `ObjectsQuery` runs a SELECT of whole rows through the driver, converts
each value as its column type would (decryption included), and places each object in
the session's identity map as the ORM's own load would have: unchanged, and written back
by the session's flush if the turn changes it. `LoadedInsert` does the same for a new
row. No ORM load events fire for these objects (nothing here listens for them).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

from sqlalchemy import Column, Table, bindparam, insert, inspect
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Mapper, Session, configure_mappers
from sqlalchemy.orm.attributes import instance_state
from sqlalchemy.types import TypeEngine

from bot.storage.direct import DriverStatement


class _Columns(NamedTuple):
    names: list[str]  # each column's attribute name, in the table's order
    convert: list[Callable[[Any], Any] | None]  # each column's result conversion, if any


class _Loader:
    """What turning a table's row into a loaded object of a mapped class needs."""

    def __init__(self, cls: type) -> None:
        self.mapper: Mapper[Any] = inspect(cls)
        self.table: Table = self.mapper.local_table  # type: ignore[assignment]
        if [column.key for column in self.mapper.primary_key] != ["id"]:
            raise ValueError(f"{cls.__name__} is not keyed by one column 'id'")
        self._by_dialect: weakref.WeakKeyDictionary[Dialect, _Columns] = (
            weakref.WeakKeyDictionary())

    def columns(self, dialect: Dialect) -> _Columns:
        found = self._by_dialect.get(dialect)
        if found is None:
            configure_mappers()  # as the ORM's first query would: attributes get their workings
            names: list[str] = []
            convert: list[Callable[[Any], Any] | None] = []
            for column in self.table.columns:
                names.append(self.mapper.get_property_by_column(column).key)
                convert.append(column.type.dialect_impl(dialect).result_processor(dialect, None))
            found = self._by_dialect[dialect] = _Columns(names, convert)
        return found

    def place(self, session: Session, values: dict[str, Any]) -> Any:
        """The object holding `values` (every column's), now in the session as loaded; the
        session's own object for that row if it already has one, as the ORM's load
        would give (unrefreshed)."""
        key = self.mapper.identity_key_from_primary_key((values["id"],))
        identity_map = session.identity_map
        found = identity_map.get(key)
        if found is not None:
            return found
        # The steps of the ORM's own load (sqlalchemy.orm.loading._instance_processor):
        # keyed, in the identity map, every value committed. Adding a detached object
        # instead (make_transient_to_detached, Session.add) cost about 3% of a turn more,
        # in cascades and checks that a row fresh from the database does not need.
        obj = self.mapper.class_manager.new_instance()
        state = instance_state(obj)
        state.dict.update(values)
        state.key = key
        state.identity_token = None
        state.session_id = session.hash_key
        identity_map._add_unpresent(state, key)  # noqa: SLF001
        state._commit_all(state.dict, identity_map)  # noqa: SLF001
        return obj


class ObjectsQuery:
    """A SELECT (or an INSERT ... RETURNING) of every column of one or more mapped
    classes' tables, each table's in its own order, one table after another (an outer
    join may leave a table's all NULL). `rows` gives, per row, one object per class, or
    None where its key is NULL. `types` converts parameters as DriverStatement's do."""

    def __init__(self, classes: Sequence[type], statement: Any,
                 types: Mapping[str, TypeEngine[Any]] | None = None) -> None:
        self.loaders = [_Loader(cls) for cls in classes]
        expected = [column for loader in self.loaders for column in loader.table.columns]
        selected = list(statement.exported_columns)  # what a SELECT, or a RETURNING, gives
        if len(selected) != len(expected) or any(
                not isinstance(given, Column) or given.table is not wanted.table
                or given.key != wanted.key
                for given, wanted in zip(selected, expected, strict=True)):
            raise ValueError("an ObjectsQuery selects each table's columns, in order")
        self.statement = DriverStatement(statement, types)

    def rows(self, session: Session, values: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        dialect = session.get_bind().dialect
        found = []
        for row in self.statement.rows(session, values):
            objects: list[Any] = []
            start = 0
            for loader in self.loaders:
                names, convert = loader.columns(dialect)
                end = start + len(names)
                if row[start] is None:  # the key: an outer join found no row
                    objects.append(None)
                else:
                    objects.append(loader.place(session, {
                        name: value if to is None else to(value)
                        for name, to, value in zip(names, convert, row[start:end], strict=True)}))
                start = end
            found.append(tuple(objects))
        return found

    def first(self, session: Session, values: Mapping[str, Any]) -> tuple[Any, ...] | None:
        rows = self.rows(session, values)
        return rows[0] if rows else None


class LoadedInsert:
    """INSERT a row of a mapped class, every column given but its key, through the driver;
    `add` returns the new object, in the session as loaded."""

    def __init__(self, cls: type) -> None:
        self.loader = _Loader(cls)
        table = self.loader.table
        self.columns = [column.key for column in table.columns if column.key != "id"]
        self.statement = DriverStatement(
            insert(table).values({key: bindparam(key) for key in self.columns})
            .returning(table.c.id),
            {key: table.c[key].type for key in self.columns})

    def add(self, session: Session, values: dict[str, Any]) -> Any:
        if set(values) != set(self.columns):
            raise ValueError(f"a new {self.loader.table.name} row gives {sorted(self.columns)}")
        (row,) = self.statement.rows(session, values)  # after the session's own writes
        return self.loader.place(session, {**values, "id": row[0]})
