"""Logging in to Eddy with SCRAM-SHA-256 over TLS from psycopg 3, psycopg2
and asyncpg: verify-full against the test CA, wrong passwords (28P01) and
unknown roles (28000).

Usage: auth.py PORT CA_FILE  (the server runs with --auth scram, TLS, and
role `app` with password `app-secret`)."""

import asyncio
import ssl
import sys

import asyncpg
import psycopg
import psycopg2

from harness import check, finish, test

PORT = int(sys.argv[1])
CA = sys.argv[2]
DSN = f"host=localhost port={PORT} dbname=eddy connect_timeout=10"


def sqlstate_of(connect):
    try:
        connect()
    except Exception as e:  # noqa: BLE001 - each driver raises its own type
        return getattr(e, "sqlstate", None) or getattr(e, "pgcode", None), str(e)
    return None, "connected"


@test
def psycopg_verify_full():
    """psycopg 3 logs in with SCRAM-SHA-256-PLUS over TLS, verifying the server"""
    dsn = (f"{DSN} user=app password=app-secret sslmode=verify-full sslrootcert={CA} "
           "channel_binding=require")
    with psycopg.connect(dsn) as conn:
        user = conn.execute("SELECT current_user").fetchone()[0]
        check(user == "app", f"current_user {user}")
        check(conn.pgconn.ssl_in_use, "no TLS")
        rows = conn.execute("SELECT n FROM auth_numbers ORDER BY n").fetchall()
        check(rows == [(1,), (2,)], f"rows {rows}")
        return f"{user} over TLS, {len(rows)} rows"


@test
def psycopg_errors():
    """psycopg 3 is refused with Postgres's messages (libpq gives no SQLSTATE at login)"""
    wrong = sqlstate_of(lambda: psycopg.connect(f"{DSN} user=app password=nope sslmode=require"))
    check('FATAL:  password authentication failed for user "app"' in wrong[1], wrong[1])
    unknown = sqlstate_of(lambda: psycopg.connect(f"{DSN} user=ghost password=x sslmode=require"))
    check('FATAL:  role "ghost" does not exist' in unknown[1], unknown[1])
    return "refused twice"


@test
def psycopg2_require():
    """psycopg2 logs in with SCRAM and sslmode=require"""
    conn = psycopg2.connect(f"{DSN} user=app password=app-secret sslmode=require")
    try:
        cur = conn.cursor()
        cur.execute("SELECT current_user")
        user = cur.fetchone()[0]
        check(user == "app", f"current_user {user}")
        return user
    finally:
        conn.close()


@test
def psycopg2_denied():
    """psycopg2 sees 42501 on a table app may not write"""
    conn = psycopg2.connect(f"{DSN} user=app password=app-secret sslmode=require")
    conn.autocommit = True
    try:
        cur = conn.cursor()
        try:
            cur.execute("INSERT INTO auth_numbers VALUES (3)")
        except psycopg2.Error as e:
            check(e.pgcode == "42501", f"pgcode {e.pgcode}")
            return e.pgerror.strip()
        raise AssertionError("the insert was allowed")
    finally:
        conn.close()


@test
def asyncpg_verify_full():
    """asyncpg logs in with SCRAM over TLS, verifying the server"""

    async def run():
        context = ssl.create_default_context(cafile=CA)
        conn = await asyncpg.connect(
            host="localhost", port=PORT, user="app", password="app-secret", database="eddy", ssl=context
        )
        try:
            user = await conn.fetchval("SELECT current_user")
            check(user == "app", f"current_user {user}")
            check(conn._transport.get_extra_info("ssl_object") is not None, "no TLS")
        finally:
            await conn.close()
        try:
            await asyncpg.connect(
                host="localhost", port=PORT, user="app", password="nope", database="eddy", ssl=context
            )
        except asyncpg.PostgresError as e:
            check(e.sqlstate == "28P01", f"wrong password: {e.sqlstate}")
        else:
            raise AssertionError("a wrong password logged in")
        try:
            await asyncpg.connect(
                host="localhost", port=PORT, user="ghost", password="x", database="eddy", ssl=context
            )
        except asyncpg.PostgresError as e:
            check(e.sqlstate == "28000", f"unknown role: {e.sqlstate}")
            return f"{user} over TLS; wrong password 28P01, unknown role 28000"
        raise AssertionError("an unknown role logged in")

    return asyncio.run(run())


sys.exit(finish("auth"))
