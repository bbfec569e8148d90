#!/usr/bin/env python3
"""Eddy with psycopg 3: server-side cursors, a SUBSCRIBE cursor, a cursor error.

Usage: psycopg_cursors.py PORT   (server on 127.0.0.1; psycopg from ../install.sh)
Prints one line per check group, then 'psycopg_cursors: N passed, M failed';
exits 1 if any group failed.
"""
import sys
import time

import psycopg
from psycopg import errors

from harness import check, finish, test

PORT = int(sys.argv[1])
DSN = f"host=127.0.0.1 port={PORT} user=eddy dbname=eddy connect_timeout=10"
T, V = "psycopg_cur_t", "psycopg_cur_v"
N = 20_000

admin = psycopg.connect(DSN, autocommit=True)
admin.execute(f"DROP MATERIALIZED VIEW IF EXISTS {V}")
admin.execute(f"DROP TABLE IF EXISTS {T}")
admin.execute(f"CREATE TABLE {T} (id BIGINT PRIMARY KEY, name TEXT, amount BIGINT)")
admin.execute(f"INSERT INTO {T} SELECT x, 'row ' || x, x * 3 FROM generate_series(1, {N}) AS g(x)")
admin.execute(f"CREATE MATERIALIZED VIEW {V} AS SELECT id, name, amount FROM {T} WHERE id <= 3")
admin.execute("FLUSH")


@test
def named_cursor_iteration():
    """(a) named cursor, itersize=1000, 20,000 rows"""
    with psycopg.connect(DSN) as conn, conn.cursor(name="psycopg_big") as cur:
        cur.itersize = 1000
        cur.execute(f"SELECT id, name, amount FROM {T}")
        ids, total = set(), 0
        for id_, name, amount in cur:
            check(name == f"row {id_}" and amount == id_ * 3, f"bad row {(id_, name, amount)}")
            check(id_ not in ids, f"row {id_} seen twice")
            ids.add(id_)
            total += amount
    check(len(ids) == N, f"got {len(ids)} rows, want {N}")
    check(total == 3 * N * (N + 1) // 2, f"sum {total}, want {3 * N * (N + 1) // 2}")
    return f"{len(ids)} rows, sum {total}"


@test
def named_cursor_fetchmany():
    """(b) fetchmany/fetchone on a named cursor"""
    with psycopg.connect(DSN) as conn, conn.cursor(name="psycopg_many") as cur:
        cur.execute(f"SELECT id, amount FROM {T} WHERE id <= 2500 ORDER BY id")
        check([r[0] for r in cur.fetchmany(1000)] == list(range(1, 1001)), "fetchmany #1: wrong ids")
        check([r[0] for r in cur.fetchmany(1000)] == list(range(1001, 2001)), "fetchmany #2: wrong ids")
        one = cur.fetchone()
        check(one == (2001, 6003), f"fetchone gave {one}")
        rest = cur.fetchmany(1000)
        check([r[0] for r in rest] == list(range(2002, 2501)), f"fetchmany tail: {len(rest)} rows")
        check(cur.fetchmany(10) == [], "fetchmany after the end is not empty")
    return "1000 + 1000 + 1 + 499 rows in order"


@test
def subscribe_cursor():
    """(c) DECLARE ... CURSOR FOR SUBSCRIBE, FETCH ... WITH (timeout)"""
    with psycopg.connect(DSN, autocommit=True) as conn:
        conn.execute("BEGIN")
        conn.execute(f"DECLARE sub CURSOR FOR SUBSCRIBE {V} WITH (SNAPSHOT = true)")
        snap = conn.execute("FETCH ALL sub WITH (timeout = '1s')").fetchall()
        want = [(1, 1, "row 1", 3), (1, 2, "row 2", 6), (1, 3, "row 3", 9)]
        check(sorted(r[1:] for r in snap) == want, f"snapshot rows {snap}")
        snap_ts = max(int(r[0]) for r in snap)

        admin.execute(f"UPDATE {T} SET amount = 1000 WHERE id = 2")
        admin.execute("FLUSH")
        change = conn.execute("FETCH ALL sub WITH (timeout = '2s')").fetchall()
        check(sorted(r[1:] for r in change) == [(-1, 2, "row 2", 6), (1, 2, "row 2", 1000)],
              f"after UPDATE + FLUSH got {change}")
        stamps = {int(r[0]) for r in change}
        check(len(stamps) == 1 and min(stamps) > snap_ts, f"update at {stamps}, snapshot at {snap_ts}")

        t0 = time.monotonic()
        none = conn.execute("FETCH ALL sub WITH (timeout = '0s')").fetchall()
        took = time.monotonic() - t0
        check(none == [], f"timeout='0s' with nothing new gave {none}")
        check(took < 0.5, f"FETCH ... WITH (timeout = '0s') took {took:.2f}s")
        conn.execute("COMMIT")
    return f"3 snapshot rows, -1/+1 pair, empty 0s fetch in {took * 1000:.0f} ms"


@test
def missing_cursor():
    """(d) FETCH from a missing cursor"""
    with psycopg.connect(DSN) as conn:
        try:
            conn.execute("FETCH 1 FROM psycopg_no_such_cursor")
            check(False, "FETCH from a missing cursor did not fail")
        except errors.InvalidCursorName as e:
            check(e.sqlstate == "34000", f"sqlstate {e.sqlstate}")
        conn.rollback()
        check(conn.execute("SELECT 1").fetchone() == (1,), "connection unusable after the error")
    return "InvalidCursorName (34000), connection still usable"


admin.execute(f"DROP MATERIALIZED VIEW {V}")
admin.execute(f"DROP TABLE {T}")
admin.close()
sys.exit(finish("psycopg_cursors"))
