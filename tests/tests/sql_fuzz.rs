//! A random SQL generator in sqlsmith's manner: statements over the
//! current catalog (queries, DML, DDL on tables, streams and views,
//! grants, settings), most of them valid and some nonsense, sent over
//! pgwire. Nothing may panic the server or hang a session, every error
//! must carry a SQLSTATE, and the server must answer a health query at
//! the end. `EDDY_SQL_FUZZ_STATEMENTS` sets the budget (a short one by
//! default, for CI), `EDDY_SQL_FUZZ_SEED` the seed and
//! `EDDY_SQL_FUZZ_CLIENTS` how many sessions share it, each over its own
//! relations, at once.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use eddy_tests::TestServer;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Relations one session keeps at most; past it, creating turns into
/// dropping.
const MAX_RELATIONS: usize = 40;

/// How long one statement may take before its session counts as hung.
const HUNG: Duration = Duration::from_secs(30);

struct Relation {
    name: String,
    columns: Vec<(String, &'static str)>,
    /// Whether rows can be written to it.
    writable: bool,
}

struct Generator {
    rng: StdRng,
    relations: Vec<Relation>,
    next: usize,
    /// Starts the names of this generator's relations.
    prefix: String,
}

const TYPES: [&str; 7] = [
    "INT",
    "BIGINT",
    "TEXT",
    "DOUBLE PRECISION",
    "BOOLEAN",
    "TIMESTAMP",
    "NUMERIC(10,2)",
];

impl Generator {
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.rng.random_range(0..items.len())]
    }

    fn chance(&mut self, percent: u32) -> bool {
        self.rng.random_range(0..100) < percent
    }

    fn literal(&mut self, ty: &str) -> String {
        if self.chance(8) {
            return "NULL".into();
        }
        match ty {
            "INT" | "BIGINT" => self
                .pick(&[
                    "0",
                    "1",
                    "-1",
                    "42",
                    "2147483647",
                    "-2147483648",
                    "9223372036854775807",
                    "99999999999999999999",
                ])
                .to_string(),
            "TEXT" => self
                .pick(&[
                    "'a'",
                    "''",
                    "'it''s'",
                    "'ünï©ødé'",
                    "'\\x00'",
                    "repeat('x', 1000)",
                    "'%_'",
                ])
                .to_string(),
            "DOUBLE PRECISION" => self
                .pick(&["0.5", "-1e308", "'NaN'", "'Infinity'", "1e-320", "3.14"])
                .to_string(),
            "BOOLEAN" => self
                .pick(&["true", "false", "'yes'", "'maybe'"])
                .to_string(),
            "TIMESTAMP" => self
                .pick(&[
                    "'2024-01-01 00:00:00'",
                    "now()",
                    "'infinity'",
                    "'1970-01-01'",
                    "'not a time'",
                    "TIMESTAMP '2024-02-30 00:00:00'",
                ])
                .to_string(),
            _ => self
                .pick(&["1.25", "-99999999.99", "12345678901.5", "0"])
                .to_string(),
        }
    }

    fn relation(&mut self) -> Option<usize> {
        (!self.relations.is_empty()).then(|| self.rng.random_range(0..self.relations.len()))
    }

    fn column_expr(&mut self, r: usize) -> String {
        let (name, ty) = self.relations[r].columns
            [self.rng.random_range(0..self.relations[r].columns.len())]
        .clone();
        match self.rng.random_range(0..12) {
            0 => format!("{name} + 1"),
            1 => format!("coalesce({name}, {})", self.literal(ty)),
            2 => format!("CAST({name} AS TEXT)"),
            3 => format!("length(CAST({name} AS TEXT))"),
            4 => format!("{name} IS NULL"),
            5 => format!("CASE WHEN {name} IS NULL THEN 0 ELSE 1 END"),
            6 => format!("{name}::{}", self.pick(&TYPES)),
            7 => format!("no_such_function({name})"),
            8 => format!("{name} || 'x'"),
            9 => format!("upper({name})"),
            _ => name,
        }
    }

    fn predicate(&mut self, r: usize) -> String {
        let (name, ty) = self.relations[r].columns
            [self.rng.random_range(0..self.relations[r].columns.len())]
        .clone();
        let op = *self.pick(&["=", "<>", "<", ">=", "IS DISTINCT FROM", "LIKE"]);
        let value = self.literal(ty);
        format!("{name} {op} {value}")
    }

    fn query(&mut self) -> String {
        let Some(r) = self.relation() else {
            return "SELECT 1".into();
        };
        let name = self.relations[r].name.clone();
        let exprs: Vec<String> = (0..1 + self.rng.random_range(0..3))
            .map(|_| self.column_expr(r))
            .collect();
        let mut sql = match self.rng.random_range(0..6) {
            0 => format!("SELECT count(*), {} FROM {name} GROUP BY 2", exprs[0]),
            1 => {
                let other = self.relation().unwrap_or(r);
                let other_name = self.relations[other].name.clone();
                let (a, _) = self.relations[r].columns[0].clone();
                let (b, _) = self.relations[other].columns[0].clone();
                format!(
                    "SELECT x.{a}, y.{b} FROM {name} x {} JOIN {other_name} y ON x.{a} = y.{b}",
                    self.pick(&["", "LEFT", "FULL", "CROSS"])
                )
            }
            2 => format!(
                "SELECT {} FROM {name} WHERE {} IN (SELECT {} FROM {name})",
                exprs.join(", "),
                exprs[0],
                exprs[0]
            ),
            3 => format!("SELECT DISTINCT {} FROM {name}", exprs.join(", ")),
            4 => format!(
                "SELECT {}, sum(1) OVER (ORDER BY {}) FROM {name}",
                exprs[0], exprs[0]
            ),
            _ => format!("SELECT {} FROM {name}", exprs.join(", ")),
        };
        if self.chance(50) && !sql.contains(" JOIN ") {
            let predicate = self.predicate(r);
            sql = if sql.contains(" WHERE ") {
                format!("{sql} AND {predicate}")
            } else if sql.contains(" GROUP BY ") {
                sql.replacen(" GROUP BY ", &format!(" WHERE {predicate} GROUP BY "), 1)
            } else {
                format!("{sql} WHERE {predicate}")
            };
        }
        if self.chance(30) {
            sql.push_str(&format!(
                " ORDER BY 1 LIMIT {}",
                self.pick(&["0", "1", "10", "-1", "ALL"])
            ));
        }
        sql
    }

    fn create_table(&mut self) -> (String, Relation) {
        self.next += 1;
        let name = format!("{}t{}", self.prefix, self.next);
        let mut columns = vec![("id".to_owned(), "BIGINT")];
        for i in 0..1 + self.rng.random_range(0..4) {
            columns.push((format!("c{i}"), *self.pick(&TYPES)));
        }
        let defs: Vec<String> = columns.iter().map(|(n, t)| format!("{n} {t}")).collect();
        let key = if self.chance(80) {
            ", PRIMARY KEY (id)"
        } else {
            ""
        };
        let sql = format!("CREATE TABLE {name} ({}{key})", defs.join(", "));
        (
            sql,
            Relation {
                name,
                columns,
                writable: true,
            },
        )
    }

    fn create_view(&mut self) -> (String, Option<Relation>) {
        let Some(r) = self.relation() else {
            return ("CREATE MATERIALIZED VIEW fz_bad AS SELECT".into(), None);
        };
        self.next += 1;
        let name = format!("{}v{}", self.prefix, self.next);
        let source = self.relations[r].name.clone();
        let (column, ty) = self.relations[r].columns
            [self.rng.random_range(0..self.relations[r].columns.len())]
        .clone();
        let (sql, columns) = match self.rng.random_range(0..4) {
            0 => (
                format!("SELECT {column} AS g, count(*) AS n FROM {source} GROUP BY {column}"),
                vec![("g".to_owned(), ty), ("n".to_owned(), "BIGINT")],
            ),
            1 => (
                format!("SELECT id AS id, {column} AS v FROM {source} WHERE {}", self.predicate(r)),
                vec![("id".to_owned(), "BIGINT"), ("v".to_owned(), ty)],
            ),
            2 => (
                format!("SELECT a.id AS id, count(*) AS n FROM {source} a JOIN {source} b ON a.id = b.id GROUP BY a.id"),
                vec![("id".to_owned(), "BIGINT"), ("n".to_owned(), "BIGINT")],
            ),
            _ => (
                format!("SELECT max(id) AS id, min({column}) AS m FROM {source}"),
                vec![("id".to_owned(), "BIGINT"), ("m".to_owned(), ty)],
            ),
        };
        let kind = if self.chance(80) {
            "MATERIALIZED VIEW"
        } else {
            "VIEW"
        };
        (
            format!("CREATE {kind} {name} AS {sql}"),
            Some(Relation {
                name,
                columns,
                writable: false,
            }),
        )
    }

    fn dml(&mut self) -> String {
        let writable: Vec<usize> = (0..self.relations.len())
            .filter(|i| self.relations[*i].writable)
            .collect();
        if writable.is_empty() {
            return "INSERT INTO nowhere VALUES (1)".into();
        }
        let r = *self.pick(&writable);
        let name = self.relations[r].name.clone();
        let columns = self.relations[r].columns.clone();
        match self.rng.random_range(0..5) {
            0 | 1 => {
                let rows: Vec<String> = (0..1 + self.rng.random_range(0..4))
                    .map(|_| {
                        let values: Vec<String> = columns
                            .iter()
                            .map(|(n, t)| {
                                if n == "id" {
                                    self.rng.random_range(0..50).to_string()
                                } else {
                                    self.literal(t)
                                }
                            })
                            .collect();
                        format!("({})", values.join(", "))
                    })
                    .collect();
                format!("INSERT INTO {name} VALUES {}", rows.join(", "))
            }
            2 => {
                let (column, ty) = columns[self.rng.random_range(0..columns.len())].clone();
                format!(
                    "UPDATE {name} SET {column} = {} WHERE {}",
                    self.literal(ty),
                    self.predicate(r)
                )
            }
            3 => format!("DELETE FROM {name} WHERE {}", self.predicate(r)),
            _ => format!("INSERT INTO {name} SELECT * FROM {name} WHERE id < 0"),
        }
    }

    fn nonsense(&mut self) -> String {
        const WORDS: [&str; 24] = [
            "SELECT", "FROM", "WHERE", "(", ")", ",", "*", "CREATE", "TABLE", "STREAM", "EMIT",
            "CHANGES", "WINDOW", "TUMBLING", "GROUP", "BY", "'", "\"", ";", "1", "NULL", "JOIN",
            "ON", "::",
        ];
        let mut words: Vec<String> = (0..1 + self.rng.random_range(0..12))
            .map(|_| self.pick(&WORDS).to_string())
            .collect();
        if let Some(r) = self.relation() {
            words.push(self.relations[r].name.clone());
        }
        words.join(" ")
    }

    /// One statement, and the relation it would add (or drop, by name).
    fn statement(&mut self) -> (String, Option<Relation>, Option<String>) {
        let mut roll = self.rng.random_range(0..100);
        if (60..=70).contains(&roll) && self.relations.len() >= MAX_RELATIONS {
            // Drop instead, so a long run's catalog stays small.
            roll = 71;
        }
        match roll {
            0..=34 => (self.query(), None, None),
            35..=59 => (self.dml(), None, None),
            60..=64 => {
                let (sql, relation) = self.create_table();
                (sql, Some(relation), None)
            }
            65..=70 => {
                let (sql, relation) = self.create_view();
                (sql, relation, None)
            }
            71..=74 => match self.relation() {
                Some(r) => {
                    let name = self.relations[r].name.clone();
                    let kind = if self.relations[r].writable {
                        "TABLE"
                    } else {
                        "MATERIALIZED VIEW"
                    };
                    let cascade = if self.chance(30) { " CASCADE" } else { "" };
                    (
                        format!("DROP {kind} IF EXISTS {name}{cascade}"),
                        None,
                        Some(name),
                    )
                }
                None => ("DROP TABLE nothing".into(), None, None),
            },
            75..=79 => {
                let statement = match self.rng.random_range(0..6) {
                    0 => "SET statement_timeout = '5s'".into(),
                    1 => format!(
                        "SET query_memory_limit = '{}'",
                        self.pick(&["1MB", "64MB", "1GB", "0", "lots"])
                    ),
                    2 => "SHOW ALL".into(),
                    3 => format!("SET extra_float_digits = {}", self.pick(&["0", "3", "99"])),
                    4 => "BEGIN; SELECT 1; COMMIT".into(),
                    _ => "RESET ALL".into(),
                };
                (statement, None, None)
            }
            80..=84 => {
                let statement = match self.relation() {
                    Some(r) => {
                        let name = self.relations[r].name.clone();
                        match self.rng.random_range(0..4) {
                            0 => format!("GRANT SELECT ON {name} TO fz_role"),
                            1 => format!("REVOKE ALL ON {name} FROM fz_role"),
                            2 => format!("EXPLAIN SELECT * FROM {name}"),
                            _ => format!("DESCRIBE {name}"),
                        }
                    }
                    None => "GRANT SELECT ON nothing TO nobody".into(),
                };
                (statement, None, None)
            }
            85..=89 => {
                let statement = match self.rng.random_range(0..5) {
                    0 => "SELECT * FROM pg_catalog.pg_class WHERE relname LIKE 'fz%'".into(),
                    1 => "SELECT table_name FROM information_schema.tables".into(),
                    2 => "SHOW TABLES".into(),
                    3 => "SHOW QUERIES".into(),
                    _ => "SELECT rolname FROM pg_roles".into(),
                };
                (statement, None, None)
            }
            _ => (self.nonsense(), None, None),
        }
    }
}

/// What one session's statements came to.
#[derive(Default)]
struct Outcomes {
    by_sqlstate: BTreeMap<String, usize>,
    /// Internal errors (XX000) by message, with the first statement that
    /// raised each.
    internal: BTreeMap<String, (usize, String)>,
    slowest: (Duration, String),
}

impl Outcomes {
    fn merge(&mut self, other: Outcomes) {
        for (code, n) in other.by_sqlstate {
            *self.by_sqlstate.entry(code).or_default() += n;
        }
        for (message, (n, sql)) in other.internal {
            self.internal.entry(message).or_insert((0, sql)).0 += n;
        }
        if other.slowest.0 > self.slowest.0 {
            self.slowest = other.slowest;
        }
    }
}

/// Runs `budget` statements from `generator` in sessions of its own.
async fn run_session(
    config: tokio_postgres::Config,
    mut generator: Generator,
    budget: usize,
) -> Result<Outcomes> {
    let mut outcomes = Outcomes::default();
    let mut client = eddy_tests::connect(&config).await?;
    for i in 0..budget {
        let (sql, added, dropped) = generator.statement();
        let began = Instant::now();
        let result = tokio::time::timeout(HUNG, client.simple_query(&sql))
            .await
            .with_context(|| format!("statement {i} hung its session for {HUNG:?}: {sql}"))?;
        let took = began.elapsed();
        if took > outcomes.slowest.0 {
            outcomes.slowest = (took, sql.clone());
        }
        match result {
            Ok(_) => {
                *outcomes.by_sqlstate.entry("ok".into()).or_default() += 1;
                if let Some(relation) = added {
                    generator.relations.push(relation);
                }
                if let Some(name) = dropped {
                    generator.relations.retain(|r| r.name != name);
                }
            }
            Err(e) => {
                let Some(db) = e.as_db_error() else {
                    bail!("statement {i} failed without a SQLSTATE ({e}): {sql}");
                };
                let code = db.code().code().to_owned();
                if code == "XX000" {
                    let message = db.message().chars().take(100).collect();
                    outcomes
                        .internal
                        .entry(message)
                        .or_insert((0, sql.clone()))
                        .0 += 1;
                }
                *outcomes.by_sqlstate.entry(code).or_default() += 1;
                if client.is_closed() {
                    bail!("statement {i} closed the session: {sql}");
                }
                // A failed statement may leave a transaction block open.
                let _ = client.batch_execute("ROLLBACK").await;
            }
        }
        if i % 500 == 499 {
            // A fresh session now and then, as clients come and go.
            client = eddy_tests::connect(&config).await?;
        }
    }
    Ok(outcomes)
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_sql_never_panics_hangs_or_errs_without_a_sqlstate() -> Result<()> {
    let budget: usize = env_or("EDDY_SQL_FUZZ_STATEMENTS", 3_000);
    let seed: u64 = env_or("EDDY_SQL_FUZZ_SEED", 16);
    let clients: usize = env_or("EDDY_SQL_FUZZ_CLIENTS", 2).max(1);
    let mut server = TestServer::start()?;
    let client = server.connect().await?;
    client.batch_execute("CREATE ROLE fz_role").await?;
    let started = Instant::now();
    let sessions: Vec<_> = (0..clients)
        .map(|c| {
            let generator = Generator {
                rng: StdRng::seed_from_u64(seed.wrapping_add(c as u64)),
                relations: Vec::new(),
                next: 0,
                prefix: format!("fz{c}_"),
            };
            let share = budget / clients + usize::from(c < budget % clients);
            tokio::spawn(run_session(server.pg_config(), generator, share))
        })
        .collect();
    let mut outcomes = Outcomes::default();
    for session in sessions {
        match session.await? {
            Ok(done) => outcomes.merge(done),
            Err(e) => match server.try_exit_status() {
                Some(status) => bail!("{e:#}\nthe server ended ({status}):\n{}", server.stderr()),
                None => return Err(e),
            },
        }
    }
    let health = client.query_one("SELECT 1", &[]).await?;
    assert_eq!(health.get::<_, i32>(0), 1);
    let fresh = server.connect().await?;
    fresh
        .query_one("SELECT count(*) FROM pg_roles", &[])
        .await?;
    println!(
        "sql fuzz: {budget} statements (seed {seed}, {clients} sessions) in {:.1}s; outcomes by SQLSTATE: {:?}",
        started.elapsed().as_secs_f64(),
        outcomes.by_sqlstate
    );
    println!(
        "slowest: {:.2}s {}",
        outcomes.slowest.0.as_secs_f64(),
        outcomes.slowest.1
    );
    for (message, (n, sql)) in &outcomes.internal {
        println!("XX000 x{n}: {message}\n    first from: {sql}");
    }
    Ok(())
}
