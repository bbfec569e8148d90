//! Differential test of materialized views: random tables, random view
//! queries and random batches of INSERT, UPDATE and DELETE. After each batch
//! and a FLUSH, every view must hold exactly the rows its query returns when
//! run as a plain batch query.
//!
//! `EDDY_DIFF_WORKLOADS` sets the number of workloads (default 150) and
//! `EDDY_DIFF_SEED` the first seed (default 1), for longer runs:
//! `EDDY_DIFF_WORKLOADS=5000 cargo test -p eddy-tests --test views_differential`.

use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};
use eddy_tests::TestServer;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio_postgres::{Client, SimpleQueryMessage};

/// View queries over tables `a (id, g, x, y, s, b, ts, f)` and `b (id, g, z, t)`.
/// `{c}` and `{n}` are replaced by small random numbers.
const QUERIES: &[&str] = &[
    // filter and project
    "SELECT id, x + y AS xy, CASE WHEN x > {c} THEN 'hi' ELSE 'lo' END AS band, coalesce(s, '?') || '!' AS s2 FROM a WHERE x % 3 <> 1 OR y IS NULL",
    "SELECT id, g * 10 + coalesce(x, 0) AS k, s IS NULL AS nos FROM a WHERE b",
    // group aggregates
    "SELECT g, count(*) AS n, count(x) AS nx, sum(x) AS sx, min(x) AS lo, max(x) AS hi FROM a GROUP BY g",
    "SELECT g, avg(x) AS ax, count(DISTINCT x) AS dx, bool_and(b) AS ba, bool_or(b) AS bo, string_agg(s, ',' ORDER BY s) AS ss FROM a GROUP BY g",
    "SELECT s, min(y) AS lo, max(y) AS hi, sum(y) AS sy FROM a GROUP BY s",
    "SELECT g, sum(x) AS sx FROM a GROUP BY g HAVING count(*) > {n}",
    "SELECT count(*) AS n, sum(x) AS sx, min(y) AS lo, max(y) AS hi, avg(y) AS ay FROM a WHERE x > {c}",
    "SELECT g, b, count(*) FILTER (WHERE x > {c}) AS big, count(*) AS n FROM a GROUP BY g, b",
    "SELECT DISTINCT g, s FROM a",
    // joins
    "SELECT a.id AS aid, b.id AS bid, a.x, b.z FROM a JOIN b ON a.g = b.g AND a.x < b.z",
    "SELECT a.id AS aid, b.id AS bid FROM a LEFT JOIN b ON a.g = b.g AND a.y > b.z",
    "SELECT a.id AS aid, b.id AS bid, b.t FROM a RIGHT JOIN b ON a.g = b.g AND a.s = b.t",
    "SELECT a.id AS aid, b.id AS bid FROM a FULL JOIN b ON a.g = b.g AND a.x = b.z",
    "SELECT a.id AS aid, b.id AS bid, c.id AS cid FROM a JOIN b ON a.g = b.g JOIN a AS c ON b.z = c.x",
    "SELECT a.g, count(*) AS n, sum(b.z) AS sz, max(a.x) AS mx FROM a JOIN b ON a.g = b.g GROUP BY a.g",
    "SELECT a.id AS aid, b.id AS bid FROM a JOIN b ON a.g = b.g AND a.s = b.t",
    // joins on a key, whose views are keyed as the other side
    "SELECT a.id, a.x, b.z FROM a JOIN b ON a.g = b.id",
    "SELECT a.id, a.x, b.z, b.t FROM a LEFT JOIN b ON a.id = b.id AND a.s = b.t",
    "SELECT b.id, b.z, a.x FROM a RIGHT JOIN b ON a.id = b.id",
    "SELECT t.g, t.sx, b.id, b.z FROM (SELECT g, sum(x) AS sx FROM a GROUP BY g) AS t JOIN b ON t.g = b.g",
    // set operations
    "SELECT g FROM a UNION SELECT g FROM b",
    "SELECT g, x FROM a UNION ALL SELECT g, z FROM b",
    "SELECT g FROM a EXCEPT SELECT g FROM b WHERE z > {c}",
    "SELECT g FROM a INTERSECT SELECT g FROM b",
    // top-N
    "SELECT id, x FROM a ORDER BY x DESC NULLS LAST, id LIMIT {n}",
    "SELECT id, y FROM a ORDER BY y, id LIMIT {n} OFFSET 2",
    "SELECT id, g, x, rn FROM (SELECT id, g, x, ROW_NUMBER() OVER (PARTITION BY g ORDER BY x DESC, id) AS rn FROM a) s WHERE rn <= {n}",
    "SELECT g, n FROM (SELECT g, count(*) AS n FROM a GROUP BY g) s ORDER BY n DESC, g LIMIT 2",
    // subqueries and CTEs
    "SELECT id FROM a WHERE g IN (SELECT g FROM b WHERE z > {c})",
    "SELECT id, x FROM a WHERE EXISTS (SELECT 1 FROM b WHERE b.g = a.g AND b.z > a.x)",
    "SELECT id FROM a WHERE NOT EXISTS (SELECT 1 FROM b WHERE b.g = a.g)",
    "SELECT id, (SELECT count(*) FROM b WHERE b.g = a.g) AS nb FROM a",
    "WITH t AS (SELECT g, sum(x) AS sx FROM a GROUP BY g) SELECT t.g, t.sx, b.z FROM t JOIN b ON t.g = b.g",
    // literals typed as Postgres types them (Nexmark q1's shape)
    "SELECT id, 0.908 * x AS px, x + 1 AS x1, 2 AS two, 1.5 AS half FROM a WHERE x > {c}",
    "SELECT g, sum(0.5 * x) AS hx, count(*) + 1 AS n1 FROM a GROUP BY g",
    // windows over event time
    "SELECT window_start, window_end, g, count(*) AS n, sum(x) AS sx FROM TUMBLE(a, ts, INTERVAL '10' SECOND) GROUP BY window_start, window_end, g",
    "SELECT window_start, count(*) AS n, max(y) AS hy FROM HOP(a, ts, INTERVAL '5' SECOND, INTERVAL '15' SECOND) GROUP BY window_start",
    "SELECT w.window_end, w.g, min(w.x) AS lo FROM HOP(a, ts, INTERVAL '4 seconds', INTERVAL '10 seconds') AS w WHERE w.x > {c} GROUP BY w.window_end, w.g",
    "SELECT t.window_start, t.id, b.z FROM TUMBLE(a, ts, INTERVAL '20' SECOND) AS t JOIN b ON t.g = b.g",
    // floats: -0 = 0, one NaN above every number, infinities
    "SELECT f, count(*) AS n, min(x) AS lo FROM a GROUP BY f",
    "SELECT g, count(DISTINCT f) AS df, min(f) AS lo, max(f) AS hi FROM a GROUP BY g",
    "SELECT DISTINCT f - f AS d, -f AS nf FROM a",
    "SELECT a.id AS aid, c.id AS cid FROM a JOIN a AS c ON a.f = c.f AND a.g = c.g",
    "SELECT id, f FROM a ORDER BY f DESC NULLS LAST, id LIMIT {n}",
    "SELECT id, -f AS nf FROM a WHERE f > {c} OR -f > {c}",
];

/// Views over other views: `{v}` is an earlier view of this workload built
/// from QUERIES[2] (grouped by g).
const VIEW_ON_VIEW: &[&str] = &[
    "SELECT v.g, v.n + v.nx AS m, b.z FROM {v} AS v JOIN b ON v.g = b.g",
    "SELECT sum(n) AS total, max(hi) AS top FROM {v}",
];

fn workloads() -> (u64, u64) {
    let count = std::env::var("EDDY_DIFF_WORKLOADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(150);
    let seed = std::env::var("EDDY_DIFF_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    (seed, count)
}

/// A random integer in `lo..hi`, or NULL one time in ten.
fn int(rng: &mut StdRng, lo: i64, hi: i64) -> String {
    if rng.random_range(0..10) == 0 {
        "NULL".into()
    } else {
        rng.random_range(lo..hi).to_string()
    }
}

/// A random boolean, or NULL one time in ten.
fn boolean(rng: &mut StdRng) -> String {
    match rng.random_range(0..10) {
        0 => "NULL".into(),
        n => (n % 2 == 0).to_string(),
    }
}

fn text(rng: &mut StdRng) -> String {
    let words = ["'ant'", "'bee'", "'cat'", "'dog'"];
    if rng.random_range(0..100) < 15 {
        "NULL".into()
    } else {
        words[rng.random_range(0..words.len())].into()
    }
}

/// A random event time within a minute, or NULL one time in ten.
fn timestamp(rng: &mut StdRng) -> String {
    match int(rng, 0, 60).as_str() {
        "NULL" => "NULL".into(),
        seconds => format!("TIMESTAMP '2026-01-01 00:00:00' + INTERVAL '{seconds} seconds'"),
    }
}

/// A random double: a signed zero, NaN, an infinity, a number or NULL.
fn float(rng: &mut StdRng) -> String {
    let values = [
        "0",
        "'-0'",
        "'NaN'",
        "'Infinity'",
        "'-Infinity'",
        "1.5",
        "-2.5",
        "3",
        "NULL",
    ];
    values[rng.random_range(0..values.len())].into()
}

fn a_row(rng: &mut StdRng, id: i64) -> String {
    let g = rng.random_range(0..5);
    let x = int(rng, -20, 20);
    let y = int(rng, -50, 50);
    let s = text(rng);
    let b = boolean(rng);
    let ts = timestamp(rng);
    let f = float(rng);
    format!("({id}, {g}, {x}, {y}, {s}, {b}, {ts}, {f})")
}

fn b_row(rng: &mut StdRng, id: i64) -> String {
    let g = rng.random_range(0..6);
    let z = int(rng, -20, 20);
    let t = text(rng);
    format!("({id}, {g}, {z}, {t})")
}

/// One random write to `a` or `b`.
fn random_write(rng: &mut StdRng, next_id: &mut i64) -> String {
    let table = if rng.random_bool(0.6) { "a" } else { "b" };
    let id = rng.random_range(0..=(*next_id).max(1));
    match rng.random_range(0..10) {
        0..=3 => {
            let rows: Vec<String> = (0..rng.random_range(1..4))
                .map(|_| {
                    *next_id += 1;
                    if table == "a" {
                        a_row(rng, *next_id)
                    } else {
                        b_row(rng, *next_id)
                    }
                })
                .collect();
            format!("INSERT INTO {table} VALUES {}", rows.join(", "))
        }
        4..=6 => match (table, rng.random_range(0..5)) {
            ("a", 0) => format!(
                "UPDATE a SET x = {}, y = y + 1 WHERE id = {id}",
                int(rng, -20, 20)
            ),
            ("a", 1) => format!(
                "UPDATE a SET g = {} WHERE id = {id}",
                rng.random_range(0..5)
            ),
            ("a", 2) => format!(
                "UPDATE a SET s = {}, b = NOT b WHERE g = {}",
                text(rng),
                rng.random_range(0..5)
            ),
            ("a", 3) if rng.random_bool(0.5) => {
                format!("UPDATE a SET ts = {} WHERE id = {id}", timestamp(rng))
            }
            ("a", 3) => format!("UPDATE a SET f = -f WHERE g = {}", rng.random_range(0..5)),
            ("a", _) => format!("UPDATE a SET id = id + 1000 WHERE id = {id}"),
            (_, 0) => format!("UPDATE b SET z = {} WHERE id = {id}", int(rng, -20, 20)),
            (_, 1) => format!(
                "UPDATE b SET g = {} WHERE id = {id}",
                rng.random_range(0..6)
            ),
            _ => format!(
                "UPDATE b SET t = {} WHERE g = {}",
                text(rng),
                rng.random_range(0..6)
            ),
        },
        7..=8 => format!("DELETE FROM {table} WHERE id = {id}"),
        _ => match rng.random_range(0..3) {
            0 => format!("DELETE FROM {table} WHERE g = {}", rng.random_range(0..5)),
            1 if table == "a" => format!("DELETE FROM a WHERE x < {}", rng.random_range(-25..0)),
            _ => format!(
                "DELETE FROM {table} WHERE id % 7 = {}",
                rng.random_range(0..7)
            ),
        },
    }
}

/// A query's rows as a sorted multiset of text rows. Floats are rounded,
/// since sums of floats depend on the order they are added in, and `-0`
/// is `0` (a group of both shows the first it met).
async fn rows(client: &Client, sql: &str) -> Result<BTreeMap<String, usize>> {
    let mut out = BTreeMap::new();
    for message in client
        .simple_query(sql)
        .await
        .with_context(|| format!("query failed: {sql}"))?
    {
        if let SimpleQueryMessage::Row(row) = message {
            let cells: Vec<String> = (0..row.len())
                .map(|i| match row.get(i) {
                    None => "NULL".to_string(),
                    Some("-0") => "0".to_string(),
                    Some(v) if v.contains('.') || v.contains('e') => match v.parse::<f64>() {
                        Ok(f) => format!("{f:.6e}"),
                        Err(_) => v.to_string(),
                    },
                    Some(v) => v.to_string(),
                })
                .collect();
            *out.entry(cells.join("|")).or_default() += 1;
        }
    }
    Ok(out)
}

/// The names and types of a query's columns, as the server describes them.
async fn column_types(client: &Client, sql: &str) -> Result<Vec<(String, String)>> {
    let statement = client
        .prepare(sql)
        .await
        .with_context(|| format!("cannot describe {sql}"))?;
    Ok(statement
        .columns()
        .iter()
        .map(|c| (c.name().to_owned(), c.type_().name().to_owned()))
        .collect())
}

fn fill(template: &str, rng: &mut StdRng) -> String {
    template
        .replace("{c}", &rng.random_range(-10..10).to_string())
        .replace("{n}", &rng.random_range(1..4).to_string())
}

async fn run_workload(client: &Client, seed: u64) -> Result<()> {
    let mut rng = StdRng::seed_from_u64(seed);
    client
        .batch_execute(
            "DROP TABLE IF EXISTS a CASCADE; DROP TABLE IF EXISTS b CASCADE;
             CREATE TABLE a (id int PRIMARY KEY, g int, x int, y int, s text, b boolean, ts timestamp, f double precision);
             CREATE TABLE b (id int PRIMARY KEY, g int, z int, t text)",
        )
        .await?;
    let mut next_id = 0i64;
    for _ in 0..rng.random_range(0..4) {
        let sql = random_write(&mut rng, &mut next_id);
        let _ = client.batch_execute(&sql).await;
    }
    // Views: some random, sometimes a grouped one with views over it.
    let mut views: Vec<(String, String)> = Vec::new();
    for v in 0..rng.random_range(2..5) {
        let sql = fill(QUERIES[rng.random_range(0..QUERIES.len())], &mut rng);
        views.push((format!("v{v}"), sql));
    }
    if rng.random_bool(0.3) {
        views.push(("grouped".into(), QUERIES[2].into()));
        let on_view = VIEW_ON_VIEW[rng.random_range(0..VIEW_ON_VIEW.len())];
        views.push(("stacked".into(), on_view.replace("{v}", "grouped")));
    }
    // Sometimes a materialized view over a plain view, which it expands.
    if rng.random_bool(0.3) {
        client
            .batch_execute(&format!("CREATE VIEW plain_grouped AS {}", QUERIES[2]))
            .await?;
        let on_view = VIEW_ON_VIEW[rng.random_range(0..VIEW_ON_VIEW.len())];
        views.push(("over_plain".into(), on_view.replace("{v}", "plain_grouped")));
    }
    for (name, sql) in &views {
        client
            .batch_execute(&format!("CREATE MATERIALIZED VIEW {name} AS {sql}"))
            .await
            .with_context(|| format!("seed {seed}: cannot create view {name} AS {sql}"))?;
        let view_types = column_types(client, &format!("SELECT * FROM {name}")).await?;
        let query_types = column_types(client, sql).await?;
        if view_types != query_types {
            bail!(
                "seed {seed}: view {name} has types {view_types:?}, its query {query_types:?}
query: {sql}"
            );
        }
    }
    for round in 0..5 {
        let mut writes = Vec::new();
        for _ in 0..rng.random_range(1..8) {
            let sql = random_write(&mut rng, &mut next_id);
            // Key collisions fail, atomically; the workload goes on.
            let _ = client.batch_execute(&sql).await;
            writes.push(sql);
        }
        client.batch_execute("FLUSH").await?;
        for (name, sql) in &views {
            let maintained = rows(client, &format!("SELECT * FROM {name}")).await?;
            let expected = rows(client, sql).await?;
            if maintained != expected {
                bail!(
                    "seed {seed}, round {round}: view {name} differs from its query\n\
                     query: {sql}\nwrites: {writes:#?}\nview:     {maintained:?}\nexpected: {expected:?}"
                );
            }
        }
    }
    Ok(())
}

/// Runs every workload against a server whose dataflows run on `workers`
/// workers.
async fn run_workloads(workers: &str) -> Result<()> {
    let server = TestServer::start_with_args(&["--workers", workers])?;
    let client = server.connect().await?;
    let (first, count) = workloads();
    for seed in first..first + count {
        run_workload(&client, seed)
            .await
            .with_context(|| format!("with {workers} workers"))?;
    }
    let stderr = server.stderr();
    assert!(!stderr.contains("panicked"), "server panicked:\n{stderr}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn views_equal_their_queries_under_random_writes_on_one_worker() -> Result<()> {
    run_workloads("1").await
}

#[tokio::test(flavor = "multi_thread")]
async fn views_equal_their_queries_under_random_writes_on_four_workers() -> Result<()> {
    run_workloads("4").await
}
