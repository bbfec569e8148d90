#!/usr/bin/env python3
"""Eddy with three Python drivers, psycopg 3, psycopg2 and asyncpg: typed
parameters in the extended protocol (int, bigint, numeric, text, bool,
date, timestamp, timestamptz, bytea, jsonb, arrays, NULL), values read
back as each driver's native types, errors as each driver's exception
with the right SQLSTATE, and transactions with savepoints.

Usage: drivers.py PORT   (server on 127.0.0.1; packages from ../install.sh)
Prints one line per check group, then 'drivers: N passed, M failed';
exits 1 if any group failed.
"""
import asyncio
import datetime as dt
import decimal
import json
import sys

import asyncpg
import psycopg
import psycopg2
import psycopg2.extras

from harness import check, finish, test

PORT = int(sys.argv[1])
DSN = f"host=127.0.0.1 port={PORT} user=eddy dbname=eddy"
UTC = dt.timezone.utc

COLUMNS = "id bigint PRIMARY KEY, i int, n numeric(12,3), t text, b bool, d date, ts timestamp, tz timestamptz, bin bytea, j jsonb"
ROW = {
    "id": 1,
    "i": -42,
    "n": decimal.Decimal("12345.678"),
    "t": "héllo, wörld",
    "b": True,
    "d": dt.date(2024, 2, 29),
    "ts": dt.datetime(2024, 2, 29, 13, 14, 15, 123456),
    "tz": dt.datetime(2024, 2, 29, 13, 14, 15, tzinfo=UTC),
    "bin": b"\x00\x01\xfe\xff",
    "j": {"k": [1, 2, {"x": None}], "s": "v"},
}
NULLS = {"id": 2, **{k: None for k in ROW if k != "id"}}


def compare(got, want, driver):
    """Checks a row read back against `want`, column by column."""
    for column, expected in want.items():
        value = got[column]
        if column == "tz" and value is not None:
            value = value.astimezone(UTC)
        # jsonb is described as jsonb, so every driver decodes it.
        if column == "bin" and isinstance(value, memoryview):
            value = value.tobytes()
        check(value == expected, f"{driver}: {column} read back as {value!r}, want {expected!r}")
        if expected is not None:
            check(type(value) is type(expected), f"{driver}: {column} is {type(value).__name__}, want {type(expected).__name__}")


def setup(table):
    with psycopg.connect(DSN, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {table}")
        conn.execute(f"CREATE TABLE {table} ({COLUMNS})")


@test
def psycopg3_types():
    """psycopg 3: typed parameters and native values"""
    table = "drv_psycopg3"
    setup(table)
    with psycopg.connect(DSN, autocommit=True) as conn:
        insert = f"INSERT INTO {table} VALUES (%(id)s, %(i)s, %(n)s, %(t)s, %(b)s, %(d)s, %(ts)s, %(tz)s, %(bin)s, %(j)s)"
        for row in (ROW, NULLS):
            params = dict(row, j=psycopg.types.json.Jsonb(row["j"]) if row["j"] is not None else None)
            conn.execute(insert, params)
        for binary in (False, True):
            cur = conn.cursor(binary=binary)
            got = cur.execute(f"SELECT * FROM {table} WHERE id = %s", (1,)).fetchone()
            names = [d.name for d in cur.description]
            compare(dict(zip(names, got)), ROW, f"psycopg3 binary={binary}")
            got = cur.execute(f"SELECT * FROM {table} WHERE id = %s", (2,)).fetchone()
            compare(dict(zip(names, got)), NULLS, f"psycopg3 binary={binary}")
        ids = conn.execute(f"SELECT id FROM {table} WHERE id = ANY(%s) ORDER BY id", ([1, 2, 3],)).fetchall()
        check(ids == [(1,), (2,)], f"= ANY(array) gave {ids}")
        arr = conn.execute("SELECT %s::int[], %s::text[]", ([1, None, 3], ["a", "b c"])).fetchone()
        check(arr == ([1, None, 3], ["a", "b c"]), f"arrays round trip as {arr}")
    return "10 types, NULLs, arrays, text and binary results"


@test
def psycopg2_types():
    """psycopg2: typed parameters and native values"""
    table = "drv_psycopg2"
    setup(table)
    conn = psycopg2.connect(DSN)
    conn.autocommit = True
    try:
        cur = conn.cursor()
        insert = f"INSERT INTO {table} VALUES (%(id)s, %(i)s, %(n)s, %(t)s, %(b)s, %(d)s, %(ts)s, %(tz)s, %(bin)s, %(j)s)"
        for row in (ROW, NULLS):
            params = dict(row, j=psycopg2.extras.Json(row["j"]) if row["j"] is not None else None)
            cur.execute(insert, params)
        for id_, want in ((1, ROW), (2, NULLS)):
            cur.execute(f"SELECT * FROM {table} WHERE id = %s", (id_,))
            names = [d.name for d in cur.description]
            compare(dict(zip(names, cur.fetchone())), want, "psycopg2")
        cur.execute(f"SELECT id FROM {table} WHERE id = ANY(%s) ORDER BY id", ([1, 2, 3],))
        ids = cur.fetchall()
        check(ids == [(1,), (2,)], f"= ANY(array) gave {ids}")
    finally:
        conn.close()
    return "10 types, NULLs, arrays"


@test
def asyncpg_types():
    """asyncpg: binary parameters and results, types introspected through pg_type"""
    table = "drv_asyncpg"
    setup(table)

    async def run():
        conn = await asyncpg.connect(host="127.0.0.1", port=PORT, user="eddy", database="eddy")
        try:
            await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")
            # An explicit cast types the parameter jsonb, so the codec applies.
            insert = f"INSERT INTO {table} VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10::jsonb)"
            for row in (ROW, NULLS):
                await conn.execute(insert, *row.values())
            for id_, want in ((1, ROW), (2, NULLS)):
                got = await conn.fetchrow(f"SELECT * FROM {table} WHERE id = $1", id_)
                compare(dict(got), want, "asyncpg")
            # text[] has a codec in asyncpg itself; int4[] asyncpg looks up
            # through pg_type, which does not work yet (see the README).
            ids = await conn.fetch(f"SELECT id FROM {table} WHERE t = ANY($1::text[]) ORDER BY id", [ROW["t"], "x"])
            check([r["id"] for r in ids] == [1], f"= ANY(array) gave {ids}")
            arr = await conn.fetchval("SELECT $1::text[]", ["a", None, "b c"])
            check(arr == ["a", None, "b c"], f"arrays round trip as {arr}")
        finally:
            await conn.close()

    asyncio.run(run())
    return "10 types, NULLs, arrays, binary format"


@test
def errors():
    """errors: each driver's exception with Postgres's SQLSTATE"""
    cases = [
        ("SELECT * FROM drv_no_such_table", "42P01"),
        ("SELECT no_such_column FROM drv_psycopg2", "42703"),
        ("SELEC 1", "42601"),
        ("SELECT 1 / 0", "22012"),
        ("INSERT INTO drv_psycopg2 (id) VALUES (1)", "23505"),
    ]
    with psycopg.connect(DSN, autocommit=True) as conn:
        for sql, state in cases:
            try:
                conn.execute(sql)
                check(False, f"psycopg3: {sql!r} succeeded")
            except psycopg.Error as e:
                check(e.sqlstate == state, f"psycopg3: {sql!r} gave {e.sqlstate}, want {state}")
    conn = psycopg2.connect(DSN)
    conn.autocommit = True
    try:
        for sql, state in cases:
            try:
                conn.cursor().execute(sql)
                check(False, f"psycopg2: {sql!r} succeeded")
            except psycopg2.Error as e:
                check(e.pgcode == state, f"psycopg2: {sql!r} gave {e.pgcode}, want {state}")
    finally:
        conn.close()

    async def run():
        conn = await asyncpg.connect(host="127.0.0.1", port=PORT, user="eddy", database="eddy")
        try:
            for sql, state in cases:
                try:
                    await conn.execute(sql)
                    check(False, f"asyncpg: {sql!r} succeeded")
                except asyncpg.PostgresError as e:
                    check(e.sqlstate == state, f"asyncpg: {sql!r} gave {e.sqlstate}, want {state}")
            # The connection is usable after each error.
            check(await conn.fetchval("SELECT 1") == 1, "asyncpg: connection unusable after errors")
        finally:
            await conn.close()

    asyncio.run(run())
    return f"{len(cases)} errors in each of 3 drivers"


@test
def transactions():
    """transactions: commit, savepoints, and a clear error where Eddy cannot undo"""
    table = "drv_tx"
    setup(table)
    # Eddy commits each statement on its own (the README says so), so a
    # savepoint rolls back only what wrote nothing since it, and refuses
    # (0A000) rather than pretend otherwise.
    with psycopg.connect(DSN) as conn:
        conn.execute(f"INSERT INTO {table} (id) VALUES (1)")
        conn.commit()
        with conn.transaction():
            conn.execute(f"INSERT INTO {table} (id) VALUES (2)")
            try:
                with conn.transaction():
                    conn.execute(f"INSERT INTO {table} (id) VALUES (2)")
            except psycopg.errors.UniqueViolation:
                pass
            conn.execute(f"INSERT INTO {table} (id) VALUES (3)")
        conn.execute("BEGIN")
        conn.execute("SAVEPOINT s")
        conn.execute(f"INSERT INTO {table} (id) VALUES (4)")
        try:
            conn.execute("ROLLBACK TO SAVEPOINT s")
            check(False, "psycopg3: ROLLBACK TO after a write did not refuse")
        except psycopg.errors.FeatureNotSupported:
            conn.rollback()
    conn = psycopg2.connect(DSN)
    try:
        cur = conn.cursor()
        cur.execute(f"INSERT INTO {table} (id) VALUES (5)")
        cur.execute("SAVEPOINT s")
        try:
            cur.execute("SELECT 1 / 0")
            check(False, "psycopg2: division by zero succeeded")
        except psycopg2.Error as e:
            check(e.pgcode == "22012", f"psycopg2: division by zero gave {e.pgcode}")
            cur.execute("ROLLBACK TO SAVEPOINT s")
        cur.execute(f"INSERT INTO {table} (id) VALUES (6)")
        conn.commit()
    finally:
        conn.close()

    async def run():
        conn = await asyncpg.connect(host="127.0.0.1", port=PORT, user="eddy", database="eddy")
        try:
            async with conn.transaction():
                await conn.execute(f"INSERT INTO {table} (id) VALUES (7)")
                async with conn.transaction():
                    await conn.fetchval("SELECT 1")
            return [r["id"] for r in await conn.fetch(f"SELECT id FROM {table} ORDER BY id")]
        finally:
            await conn.close()

    ids = asyncio.run(run())
    check(ids == [1, 2, 3, 4, 5, 6, 7], f"rows after the transactions: {ids}")
    return f"rows {ids}; ROLLBACK TO after a write is 0A000"


sys.exit(finish("drivers"))
