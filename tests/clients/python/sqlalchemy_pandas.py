#!/usr/bin/env python3
"""Eddy with SQLAlchemy 2 (psycopg 3 and psycopg2 dialects) and pandas:
inspection, nested transactions (savepoints), typed parameters, read_sql
and to_sql.

Usage: sqlalchemy_pandas.py PORT   (server on 127.0.0.1; packages from ../install.sh)
Prints one line per check group, then 'sqlalchemy_pandas: N passed, M failed';
exits 1 if any group failed.
"""
import decimal
import sys

import pandas as pd
import sqlalchemy as sa
from sqlalchemy import exc

from harness import check, finish, test

PORT = int(sys.argv[1])
T, V, P = "sa_orders", "sa_totals", "sa_paid"
DIALECTS = ("psycopg", "psycopg2")


def sqlstate(error):
    """The SQLSTATE of a driver error that SQLAlchemy wrapped."""
    return getattr(error.orig, "sqlstate", None) or getattr(error.orig, "pgcode", None)


def engine(dialect):
    return sa.create_engine(f"postgresql+{dialect}://eddy@127.0.0.1:{PORT}/eddy")


with engine("psycopg").connect() as conn:
    conn.execute(sa.text(f"DROP VIEW IF EXISTS {P}"))
    conn.execute(sa.text(f"DROP MATERIALIZED VIEW IF EXISTS {V}"))
    conn.execute(sa.text(f"DROP TABLE IF EXISTS {T}"))
    conn.execute(sa.text("DROP TABLE IF EXISTS sa_frame"))
    conn.execute(
        sa.text(
            f"CREATE TABLE {T} (id BIGINT PRIMARY KEY, customer TEXT NOT NULL, "
            "amount NUMERIC(10, 2), qty INT DEFAULT 1, paid BOOLEAN, note VARCHAR(20))"
        )
    )
    conn.execute(
        sa.text(
            f"CREATE MATERIALIZED VIEW {V} AS "
            f"SELECT customer, sum(amount) AS total, count(*) AS n FROM {T} GROUP BY customer"
        )
    )
    conn.execute(sa.text(f"CREATE VIEW {P} AS SELECT id, customer FROM {T} WHERE paid"))
    conn.commit()


def inspection(dialect):
    inspector = sa.inspect(engine(dialect))
    tables = inspector.get_table_names()
    check(T in tables, f"{T} not in {tables}")
    leaked = {"tables", "columns", "schemata", "views"} & set(tables)
    check(not leaked, f"information_schema relations listed as tables: {leaked}")
    check(V not in tables, f"the materialized view {V} listed as a table")
    matviews = inspector.get_materialized_view_names()
    check(V in matviews, f"{V} not in {matviews}")
    views = inspector.get_view_names()
    check(P in views and V not in views, f"plain views {views}")
    check(P not in tables and P not in matviews, f"the view {P} listed as a table or matview")
    definition = inspector.get_view_definition(P)
    check("WHERE paid" in definition, f"view definition {definition!r}")
    plain_columns = [(c["name"], type(c["type"]).__name__) for c in inspector.get_columns(P)]
    check(plain_columns == [("id", "BIGINT"), ("customer", "TEXT")], f"view columns {plain_columns}")
    check("public" in inspector.get_schema_names(), "no public schema")
    check(inspector.has_table(T), f"has_table({T}) is false")
    check(not inspector.has_table("sa_no_such_table"), "has_table of a missing table is true")
    columns = {c["name"]: c for c in inspector.get_columns(T)}
    check(list(columns) == ["id", "customer", "amount", "qty", "paid", "note"], f"columns {list(columns)}")
    check(not columns["id"]["nullable"] and not columns["customer"]["nullable"], "NOT NULL lost")
    check(columns["amount"]["nullable"], "amount should be nullable")
    kinds = {name: type(c["type"]).__name__ for name, c in columns.items()}
    want = {
        "id": "BIGINT",
        "customer": "TEXT",
        "amount": "NUMERIC",
        "qty": "INTEGER",
        "paid": "BOOLEAN",
        "note": "VARCHAR",
    }
    check(kinds == want, f"column types {kinds}, want {want}")
    amount = columns["amount"]["type"]
    check((amount.precision, amount.scale) == (10, 2), f"amount is NUMERIC({amount.precision}, {amount.scale})")
    check(columns["note"]["type"].length == 20, f"note is VARCHAR({columns['note']['type'].length})")
    check(columns["qty"]["default"] == "1", f"qty's default {columns['qty']['default']!r}")
    check(columns["amount"]["default"] is None, f"amount's default {columns['amount']['default']!r}")
    view_columns = [c["name"] for c in inspector.get_columns(V)]
    check(view_columns == ["customer", "total", "n"], f"view columns {view_columns}")
    check(inspector.get_foreign_keys(T) == [], "foreign keys where there are none")
    pk = inspector.get_pk_constraint(T)
    check(pk["constrained_columns"] == ["id"] and pk["name"] == f"{T}_pkey", f"primary key {pk}")
    check(inspector.get_pk_constraint(V)["constrained_columns"] == [], "a view has no primary key")
    # The primary key's index backs its constraint, so it is not listed.
    check(inspector.get_indexes(T) == [], f"indexes {inspector.get_indexes(T)}")
    check(inspector.get_unique_constraints(T) == [], "unique constraints where there are none")
    return f"{len(tables)} tables, {len(matviews)} matviews, {len(columns)} columns, primary key {pk['name']}"


def nested_transactions(dialect):
    eng = engine(dialect)
    with eng.connect() as conn:
        with conn.begin():
            # A savepoint around a statement that fails, then goes on.
            try:
                with conn.begin_nested():
                    conn.execute(sa.text("SELECT * FROM sa_no_such_table"))
                check(False, "a query of a missing table did not fail")
            except exc.ProgrammingError as e:
                check(sqlstate(e) == "42P01", f"sqlstate {sqlstate(e)}")
            with conn.begin_nested():
                n = conn.execute(sa.text(f"SELECT count(*) FROM {T}")).scalar()
        # Writes since a savepoint cannot be rolled back: a clear error.
        with conn.begin():
            savepoint = conn.begin_nested()
            conn.execute(
                sa.text(f"INSERT INTO {T} VALUES (:id, :c, :a, :q, :p)"),
                {"id": 900 + DIALECTS.index(dialect), "c": "sp", "a": 1, "q": 1, "p": True},
            )
            try:
                savepoint.rollback()
                check(False, "ROLLBACK TO after a write did not fail")
            except exc.NotSupportedError as e:
                check(sqlstate(e) == "0A000", f"sqlstate {sqlstate(e)}")
    return f"savepoint after an error, {n} rows read; ROLLBACK TO after a write is 0A000"


def typed_parameters(dialect):
    base = 100 * (DIALECTS.index(dialect) + 1)
    rows = [
        {"id": base + 1, "c": "ann", "a": 2.345, "q": 2.5, "p": True},  # float -> numeric, int
        {"id": base + 2, "c": "ann", "a": 7, "q": 3, "p": False},  # int -> numeric
        {"id": base + 3, "c": "bob", "a": decimal.Decimal("10.10"), "q": None, "p": None},
    ]
    with engine(dialect).begin() as conn:
        conn.execute(sa.text(f"INSERT INTO {T} VALUES (:id, :c, :a, :q, :p)"), rows)
        got = conn.execute(
            sa.text(f"SELECT id, customer, amount, qty, paid FROM {T} WHERE id > :lo AND id <= :hi ORDER BY id"),
            {"lo": base, "hi": base + 3},
        ).all()
    want = [
        (base + 1, "ann", decimal.Decimal("2.35"), 2, True),
        (base + 2, "ann", decimal.Decimal("7.00"), 3, False),
        (base + 3, "bob", decimal.Decimal("10.10"), None, None),
    ]
    check([tuple(r) for r in got] == want, f"rows {got}, want {want}")
    try:
        with engine(dialect).begin() as conn:
            conn.execute(sa.text(f"INSERT INTO {T} VALUES (:id, 'x', :a, 1, true)"), {"id": base + 9, "a": 1e12})
        check(False, "an amount too large for numeric(10,2) was accepted")
    except exc.DataError as e:
        check(sqlstate(e) == "22003", f"sqlstate {sqlstate(e)}: {e.orig}")
    return "float, int and Decimal into numeric(10,2); float rounded into int; overflow is 22003"


def group(fn, dialect, doc):
    def run():
        return fn(dialect)

    run.__doc__ = f"{doc} [{dialect}]"
    test(run)


for dialect in DIALECTS:
    group(inspection, dialect, "inspector: tables, views, schemas, columns")
    group(nested_transactions, dialect, "begin_nested: savepoints")
    group(typed_parameters, dialect, "typed parameters")


@test
def pandas_round_trip():
    """pandas read_sql and to_sql"""
    eng = engine("psycopg")
    with eng.begin() as conn:
        conn.execute(sa.text("FLUSH"))
    frame = pd.read_sql(f"SELECT customer, total, n FROM {V} ORDER BY customer", eng)
    check(list(frame.columns) == ["customer", "total", "n"], f"columns {list(frame.columns)}")
    check(len(frame) >= 2, f"{len(frame)} rows from the view")
    new = pd.DataFrame({"id": [1, 2, 3], "label": ["a", "b", None], "score": [1.5, 2.25, None]})
    # The count to_sql returns is the driver's rowcount, which batched
    # inserts may not report: the rows read back are what counts.
    new.to_sql("sa_frame", eng, if_exists="fail", index=False)
    back = pd.read_sql("SELECT id, label, score FROM sa_frame ORDER BY id", eng)
    check(back["id"].tolist() == [1, 2, 3], f"ids {back['id'].tolist()}")
    check(back["label"].tolist()[:2] == ["a", "b"] and back["label"].isna().tolist()[2], "labels")
    check(back["score"].tolist()[:2] == [1.5, 2.25] and back["score"].isna().tolist()[2], "scores")
    appended = pd.DataFrame({"id": [4], "label": ["d"], "score": [4.0]})
    appended.to_sql("sa_frame", eng, if_exists="append", index=False)
    check(len(pd.read_sql_table("sa_frame", eng)) == 4, "read_sql_table after append")
    return f"{len(frame)} view rows; to_sql created, appended and read back 4 rows"


with engine("psycopg").connect() as conn:
    conn.execute(sa.text(f"DROP VIEW {P}"))
    conn.execute(sa.text(f"DROP MATERIALIZED VIEW {V}"))
    conn.execute(sa.text(f"DROP TABLE {T}"))
    conn.execute(sa.text("DROP TABLE IF EXISTS sa_frame"))
    conn.commit()
sys.exit(finish("sqlalchemy_pandas"))
