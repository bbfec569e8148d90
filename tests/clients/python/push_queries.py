#!/usr/bin/env python3
"""Eddy's push queries through drivers that speak the extended protocol:
psycopg 3 (text and binary results) and asyncpg run
`SELECT ... EMIT CHANGES LIMIT n` as any query and read its rows as they
come; a cancel ends one; parameters are refused with 0A000.

Usage: push_queries.py PORT   (server on 127.0.0.1; drivers from ../install.sh)
Prints one line per check group, then 'push_queries: N passed, M failed';
exits 1 if any group failed.
"""
import asyncio
import sys
import threading
import time

import asyncpg
import psycopg
from psycopg import errors

from harness import check, finish, test

PORT = int(sys.argv[1])
DSN = f"host=127.0.0.1 port={PORT} user=eddy dbname=eddy connect_timeout=10"
T = "push_ext_t"

admin = psycopg.connect(DSN, autocommit=True)
admin.execute(f"DROP TABLE IF EXISTS {T}")
admin.execute(f"CREATE TABLE {T} (id BIGINT PRIMARY KEY, name TEXT, amount NUMERIC(10, 2))")
next_id = [0]


class Writer:
    """Inserts a row every 100 ms until stopped, so that a push query
    started at any moment sees new rows."""

    def __enter__(self):
        self.stop = threading.Event()
        self.ids = []
        self.thread = threading.Thread(target=self.run)
        self.thread.start()
        return self

    def run(self):
        with psycopg.connect(DSN, autocommit=True) as conn:
            while not self.stop.is_set():
                next_id[0] += 1
                i = next_id[0]
                conn.execute(f"INSERT INTO {T} VALUES ({i}, 'n{i}', {i}.25)")
                self.ids.append(i)
                time.sleep(0.1)

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()


def consecutive(ids):
    return all(b == a + 1 for a, b in zip(ids, ids[1:]))


@test
def psycopg_text():
    """psycopg 3, text results: EMIT CHANGES LIMIT 3 through Parse/Bind/Execute"""
    with psycopg.connect(DSN, autocommit=True) as conn, Writer() as writer:
        started = time.monotonic()
        rows = conn.execute(f"SELECT id, name, amount FROM {T} EMIT CHANGES LIMIT 3").fetchall()
        took = time.monotonic() - started
        after = conn.execute("SELECT 41 + 1").fetchone()
    ids = [r[0] for r in rows]
    check(len(rows) == 3, f"got {len(rows)} rows")
    check(consecutive(ids) and set(ids) <= set(writer.ids), f"ids {ids}, written {writer.ids}")
    check(all(r[1] == f"n{r[0]}" and str(r[2]) == f"{r[0]}.25" for r in rows), f"rows {rows}")
    check(after == (42,), f"the next query gave {after}")
    return f"ids {ids} in {took:.2f} s, then SELECT 42"


@test
def psycopg_binary():
    """psycopg 3, binary results: native int, str and Decimal"""
    with psycopg.connect(DSN, autocommit=True) as conn, Writer():
        cur = conn.cursor(binary=True)
        rows = cur.execute(f"SELECT id, name, amount FROM {T} EMIT CHANGES LIMIT 2").fetchall()
    types = [type(v).__name__ for v in rows[0]]
    check(len(rows) == 2 and types == ["int", "str", "Decimal"], f"rows {rows}, types {types}")
    check(all(str(r[2]) == f"{r[0]}.25" for r in rows), f"rows {rows}")
    return f"{rows}"


@test
def psycopg_cancel():
    """psycopg 3: a cancel ends a push query with 57014; the connection goes on"""
    with psycopg.connect(DSN, autocommit=True) as conn:
        timer = threading.Timer(0.5, conn.cancel)
        timer.start()
        try:
            conn.execute(f"SELECT id FROM {T} EMIT CHANGES").fetchall()
            check(False, "the push query did not end")
        except errors.QueryCanceled as e:
            state = e.sqlstate
        finally:
            timer.cancel()
        after = conn.execute("SELECT 1").fetchone()
    check(state == "57014" and after == (1,), f"sqlstate {state}, then {after}")
    return "57014, then SELECT 1"


@test
def psycopg_parameters_refused():
    """psycopg 3: a push query with parameters is 0A000, and the session goes on"""
    with psycopg.connect(DSN, autocommit=True) as conn:
        try:
            conn.execute(f"SELECT id FROM {T} WHERE id > %s EMIT CHANGES LIMIT 1", (1,))
            check(False, "parameters were taken")
        except errors.FeatureNotSupported as e:
            message = str(e)
        after = conn.execute("SELECT 2").fetchone()
    check("parameters" in message and after == (2,), f"{message!r}, then {after}")
    return message


@test
def asyncpg_prepared():
    """asyncpg: a prepared push query (Describe, then binary results)"""

    async def run():
        conn = await asyncpg.connect(host="127.0.0.1", port=PORT, user="eddy", database="eddy")
        try:
            stmt = await conn.prepare(f"SELECT id, name, amount FROM {T} EMIT CHANGES LIMIT 3")
            columns = [a.name for a in stmt.get_attributes()]
            rows = await stmt.fetch()
            after = await conn.fetchval("SELECT 7")
            return columns, rows, after
        finally:
            await conn.close()

    with Writer():
        columns, rows, after = asyncio.run(run())
    ids = [r["id"] for r in rows]
    check(columns == ["id", "name", "amount"], f"columns {columns}")
    check(len(rows) == 3 and consecutive(ids), f"rows {rows}")
    check(all(r["name"] == f"n{r['id']}" and str(r["amount"]) == f"{r['id']}.25" for r in rows),
          f"rows {rows}")
    check(after == 7, f"the next query gave {after}")
    return f"columns {columns}, ids {ids}"


admin.execute(f"DROP TABLE IF EXISTS {T}")
admin.close()
sys.exit(finish("push_queries"))
