//! The real `psql` client against eddy: statements, command tags, `\dt`,
//! `\d`, `\l` (which run psql's own pg_catalog queries) and error reporting.
//!
//! Skipped with a note if psql is missing, unless `CI` is set: then missing
//! psql is a failure.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use anyhow::Result;
use eddy_tests::{run_with_timeout, TestServer};

const PSQL_TIMEOUT: Duration = Duration::from_secs(60);

fn psql_bin() -> Option<PathBuf> {
    if let Some(bin) = std::env::var_os("PSQL") {
        return Some(PathBuf::from(bin));
    }
    let default = PathBuf::from("/usr/bin/psql");
    if default.is_file() {
        return Some(default);
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join("psql"))
        .find(|p| p.is_file())
}

/// The psql binary, or `None` when the test should be skipped.
fn psql_or_skip(test: &str) -> Option<PathBuf> {
    let bin = psql_bin();
    if bin.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "psql not found and CI is set; install postgresql-client"
        );
        eprintln!("SKIPPED {test}: psql not found (install postgresql-client)");
    }
    bin
}

struct Psql {
    bin: PathBuf,
    port: u16,
}

impl Psql {
    fn new(bin: PathBuf, server: &TestServer) -> Psql {
        Psql {
            bin,
            port: server.port(),
        }
    }

    /// Runs psql with the connection flags, no psqlrc, stop on error, then
    /// `args`.
    fn run(&self, args: &[&str]) -> Result<Output> {
        let mut cmd = Command::new(&self.bin);
        let port = self.port.to_string();
        cmd.args(["-h", "127.0.0.1", "-p", &port, "-U", "eddy", "-d", "eddy"])
            .args(["-X", "-w", "-v", "ON_ERROR_STOP=1", "-P", "pager=off"])
            .args(args)
            .env("PGCONNECT_TIMEOUT", "10")
            .env("PGAPPNAME", "eddy-tests-psql")
            .env_remove("PGPASSWORD")
            .env_remove("PGSERVICE")
            .env_remove("PGOPTIONS");
        run_with_timeout(cmd, PSQL_TIMEOUT)
    }

    /// Runs psql and requires success; returns stdout.
    fn ok(&self, args: &[&str]) -> Result<String> {
        let out = self.run(args)?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "psql {args:?} failed ({}):\nstdout:\n{stdout}\nstderr:\n{stderr}",
            out.status
        );
        assert!(
            !stderr.contains("ERROR"),
            "psql {args:?} reported an error:\n{stderr}"
        );
        Ok(stdout)
    }
}

#[test]
fn create_insert_select_with_command_tags() -> Result<()> {
    let Some(bin) = psql_or_skip("create_insert_select_with_command_tags") else {
        return Ok(());
    };
    let server = TestServer::start()?;
    let psql = Psql::new(bin, &server);

    let out = psql.ok(&[
        "-c",
        "CREATE TABLE fruit (id INT PRIMARY KEY, name TEXT)",
        "-c",
        "INSERT INTO fruit VALUES (1, 'apple'), (2, 'banana')",
    ])?;
    assert_eq!(out, "CREATE TABLE\nINSERT 0 2\n");

    // -A -t: unaligned, tuples only: exactly the rows.
    let out = psql.ok(&["-A", "-t", "-c", "SELECT id, name FROM fruit ORDER BY id"])?;
    assert_eq!(out, "1|apple\n2|banana\n");

    // The aligned table psql users see, with the row count footer.
    let out = psql.ok(&["-c", "SELECT name FROM fruit WHERE id = 2"])?;
    assert!(out.contains("banana"), "{out}");
    assert!(out.contains("(1 row)"), "{out}");
    Ok(())
}

#[test]
fn script_file_runs_every_statement() -> Result<()> {
    let Some(bin) = psql_or_skip("script_file_runs_every_statement") else {
        return Ok(());
    };
    let server = TestServer::start()?;
    let psql = Psql::new(bin, &server);

    let mut script = tempfile::NamedTempFile::new()?;
    std::io::Write::write_all(
        &mut script,
        b"CREATE TABLE nums (n BIGINT PRIMARY KEY, label TEXT);\n\
          INSERT INTO nums VALUES (1, 'one');\n\
          INSERT INTO nums VALUES (2, 'two'), (3, 'three');\n\
          -- a comment line\n\
          SELECT count(*) AS c FROM nums;\n\
          SELECT label FROM nums\n  WHERE n > 1\n  ORDER BY n;\n",
    )?;
    let path = script.path().to_string_lossy().into_owned();
    let out = psql.ok(&["-A", "-t", "-f", &path])?;
    assert_eq!(
        out, "CREATE TABLE\nINSERT 0 1\nINSERT 0 2\n3\ntwo\nthree\n",
        "unexpected psql -f output"
    );
    Ok(())
}

#[test]
fn backslash_dt_d_and_l() -> Result<()> {
    let Some(bin) = psql_or_skip("backslash_dt_d_and_l") else {
        return Ok(());
    };
    let server = TestServer::start()?;
    let psql = Psql::new(bin, &server);
    psql.ok(&[
        "-c",
        "CREATE TABLE people (id INT PRIMARY KEY, name TEXT NOT NULL, score DOUBLE PRECISION, born DATE)",
    ])?;

    let dt = psql.ok(&["-c", "\\dt"])?;
    assert!(
        dt.lines()
            .any(|l| l.contains("people") && l.contains("table")),
        "\\dt should list table people:\n{dt}"
    );

    // Unaligned \d: "Column|Type|Collation|Nullable|Default" then one line
    // per column.
    let d = psql.ok(&["-A", "-c", "\\d people"])?;
    assert!(d.contains("people"), "\\d should name the table:\n{d}");
    for (column, ty) in [
        ("id", "integer"),
        ("name", "text"),
        ("score", "double precision"),
        ("born", "date"),
    ] {
        let prefix = format!("{column}|{ty}|");
        assert!(
            d.lines().any(|l| l.starts_with(&prefix)),
            "\\d people should show column {column} of type {ty}:\n{d}"
        );
    }

    let l = psql.ok(&["-c", "\\l"])?;
    assert!(l.contains("List of databases"), "\\l output:\n{l}");
    Ok(())
}

#[test]
fn backslash_dm_lists_materialized_views() -> Result<()> {
    let Some(bin) = psql_or_skip("backslash_dm_lists_materialized_views") else {
        return Ok(());
    };
    let server = TestServer::start()?;
    let psql = Psql::new(bin, &server);
    psql.ok(&[
        "-c",
        "CREATE TABLE sales (id INT PRIMARY KEY, region TEXT, amount INT)",
        "-c",
        "CREATE MATERIALIZED VIEW by_region AS SELECT region, sum(amount) AS total FROM sales GROUP BY region",
    ])?;
    let dm = psql.ok(&["-A", "-c", "\\dm"])?;
    assert!(
        dm.lines()
            .any(|l| l.contains("by_region") && l.contains("materialized view")),
        "\\dm should list by_region:\n{dm}"
    );
    let dt = psql.ok(&["-A", "-c", "\\dt"])?;
    assert!(!dt.contains("by_region"), "\\dt lists tables only:\n{dt}");
    let d = psql.ok(&["-A", "-c", "\\d by_region"])?;
    assert!(d.contains("Materialized view"), "\\d by_region:\n{d}");
    assert!(
        d.lines().any(|l| l.starts_with("total|bigint|")),
        "\\d by_region:\n{d}"
    );
    Ok(())
}

/// Every describe command the ecosystem issue names runs psql's own
/// catalog queries to the end, and shows what Postgres would: type
/// modifiers, defaults, keys, view definitions, roles and functions.
#[test]
fn describe_commands_show_postgres_columns() -> Result<()> {
    let Some(bin) = psql_or_skip("describe_commands_show_postgres_columns") else {
        return Ok(());
    };
    let server = TestServer::start()?;
    let psql = Psql::new(bin, &server);
    psql.ok(&[
        "-c",
        "CREATE TABLE orders (id BIGINT PRIMARY KEY, customer VARCHAR(20) NOT NULL, \
         amount NUMERIC(10,2) DEFAULT 0, code CHAR(3), at TIMESTAMPTZ)",
        "-c",
        "CREATE MATERIALIZED VIEW totals AS SELECT customer, sum(amount) AS total FROM orders GROUP BY customer",
    ])?;
    let described = |command: &str| psql.ok(&["-A", "-c", command]);

    let d = described("\\d orders")?;
    for line in [
        "id|bigint||not null|",
        "customer|character varying(20)||not null|",
        "amount|numeric(10,2)|||0",
        "code|character(3)|||",
        "at|timestamp with time zone|||",
        "\"orders_pkey\" PRIMARY KEY, btree (id)",
    ] {
        assert!(
            d.lines().any(|l| l.trim() == line),
            "\\d orders lacks {line:?}:\n{d}"
        );
    }
    let d_plus = described("\\d+ orders")?;
    assert!(
        d_plus.contains("amount|numeric(10,2)|||0|main"),
        "\\d+ orders:\n{d_plus}"
    );
    let view = described("\\d+ totals")?;
    assert!(
        view.contains("View definition:") && view.contains("GROUP BY customer"),
        "\\d+ totals:\n{view}"
    );

    for (command, wanted) in [
        ("\\dt", "public|orders|table|eddy"),
        ("\\dt+", "public|orders|table|eddy|permanent"),
        ("\\dm", "public|totals|materialized view|eddy"),
        ("\\dm+", "public|totals|materialized view|eddy|permanent"),
        ("\\di", "public|orders_pkey|index|eddy|orders"),
        ("\\dn", "public|eddy"),
        ("\\dn+", "public|eddy"),
        ("\\du", "eddy|Superuser"),
        ("\\l", "eddy|eddy|UTF-8"),
        ("\\df length", "pg_catalog|length|integer|text|func"),
        ("\\dfa sum", "pg_catalog|sum|bigint|integer|agg"),
        (
            "\\df+ now",
            "pg_catalog|now|timestamp with time zone||func|stable",
        ),
    ] {
        let out = described(command)?;
        assert!(
            out.lines().any(|l| l.starts_with(wanted)),
            "{command} lacks {wanted:?}:\n{out}"
        );
    }
    // No user functions: the list is empty, not an error.
    assert!(described("\\df")?.contains("(0 rows)"));
    psql.ok(&[
        "-c",
        "CREATE VIEW big_orders AS SELECT id, amount FROM orders WHERE amount > 100",
    ])?;
    let dv = described("\\dv")?;
    assert!(
        dv.contains("public|big_orders|view|eddy") && !dv.contains("totals"),
        "\\dv:\n{dv}"
    );
    let view = described("\\d+ big_orders")?;
    assert!(
        view.contains("View definition:") && view.contains("WHERE amount > 100"),
        "{view}"
    );
    // \x and \timing change only how psql prints.
    let expanded = psql.ok(&[
        "-c",
        "\\x on",
        "-c",
        "\\timing on",
        "-c",
        "SELECT id FROM orders",
    ])?;
    assert!(expanded.contains("Expanded display is on.") && expanded.contains("Timing is on."));
    Ok(())
}

#[test]
fn errors_are_postgres_style_and_server_survives() -> Result<()> {
    let Some(bin) = psql_or_skip("errors_are_postgres_style_and_server_survives") else {
        return Ok(());
    };
    let mut server = TestServer::start()?;
    let psql = Psql::new(bin, &server);

    for bad in [
        "SELEC 1",
        "SELECT * FROM no_such_table",
        "SELECT 1 +",
        "CREATE TABLE",
    ] {
        let out = psql.run(&["-c", bad])?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{bad:?} should fail in psql");
        assert!(
            stderr.contains("ERROR:"),
            "{bad:?} should give a Postgres-style ERROR:, got:\n{stderr}"
        );
        assert!(
            !stderr.contains("server closed the connection"),
            "{bad:?} closed the connection:\n{stderr}"
        );
    }

    // A syntax error carries its position, which psql points at.
    let out = psql.run(&["-c", "SELECT 1 +* FROM t"])?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("LINE 1: SELECT 1 +* FROM t\n                  ^"),
        "psql shows no caret under the error:\n{stderr}"
    );

    assert_eq!(server.try_exit_status(), None, "server exited");
    assert_eq!(psql.ok(&["-A", "-t", "-c", "SELECT 1"])?, "1\n");
    assert!(
        !server.stderr().contains("panicked"),
        "server panicked:\n{}",
        server.stderr()
    );
    Ok(())
}

/// `\set FETCH_COUNT`: psql reads the result through a cursor (DECLARE,
/// FETCH FORWARD n, CLOSE in a transaction) and prints the same rows.
#[test]
fn fetch_count_reads_through_a_cursor() -> Result<()> {
    let Some(bin) = psql_or_skip("fetch_count_reads_through_a_cursor") else {
        return Ok(());
    };
    let server = TestServer::start()?;
    let psql = Psql::new(bin, &server);
    psql.ok(&[
        "-c",
        "CREATE TABLE many (id BIGINT PRIMARY KEY, label TEXT)",
        "-c",
        "INSERT INTO many SELECT i, 'row ' || i FROM generate_series(1, 25000) AS g(i)",
    ])?;
    let query = "SELECT id, label FROM many ORDER BY id";
    let whole = psql.ok(&["-A", "-t", "-c", query])?;
    let fetched = psql.ok(&["-A", "-t", "-v", "FETCH_COUNT=100", "-c", query])?;
    assert_eq!(whole.lines().count(), 25_000);
    assert!(whole == fetched, "FETCH_COUNT changed the rows");
    // The aligned form counts every row in its footer.
    let out = psql.ok(&["-v", "FETCH_COUNT=1000", "-c", query])?;
    assert!(out.contains("(25000 rows)"), "{}", &out[out.len() - 200..]);
    // A push query through a cursor: each FETCH waits for its rows, and
    // LIMIT ends the query, so psql ends by itself.
    let pushed = psql.ok(&[
        "-A",
        "-t",
        "-v",
        "FETCH_COUNT=10",
        "-c",
        "SET 'auto.offset.reset' = 'earliest'",
        "-c",
        "SELECT id FROM many WHERE id % 1000 = 0 EMIT CHANGES LIMIT 25",
    ])?;
    let mut ids: Vec<i64> = pushed
        .lines()
        .filter(|l| !l.is_empty() && *l != "SET")
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    ids.sort_unstable();
    let expected: Vec<i64> = (1..=25).map(|i| i * 1000).collect();
    assert_eq!(ids, expected, "{pushed}");
    Ok(())
}

#[test]
fn copy_subscribe_streams_to_psql_until_ctrl_c() -> Result<()> {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;

    let Some(bin) = psql_or_skip("copy_subscribe_streams_to_psql_until_ctrl_c") else {
        return Ok(());
    };
    let server = TestServer::start()?;
    let psql = Psql::new(bin.clone(), &server);
    psql.ok(&[
        "-c",
        "CREATE TABLE notes (id INT PRIMARY KEY, body TEXT)",
        "-c",
        "INSERT INTO notes VALUES (1, 'tab\there'), (2, NULL)",
    ])?;
    // Line-buffered, so each row leaves psql as it comes.
    let port = server.port().to_string();
    let mut child = Command::new("stdbuf")
        .arg("-oL")
        .arg(&bin)
        .args(["-h", "127.0.0.1", "-p", &port, "-U", "eddy", "-X", "-w"])
        .args(["-c", "COPY (SUBSCRIBE notes) TO STDOUT"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let next = || -> Result<Vec<String>> {
        let line = rx.recv_timeout(PSQL_TIMEOUT)??;
        Ok(line.split('\t').map(str::to_owned).collect())
    };
    let mut snapshot = [next()?, next()?];
    snapshot.sort();
    let epoch = snapshot[0][0].clone();
    assert_eq!(snapshot[0][1..], ["1", "1", "tab\\there"]);
    assert_eq!(snapshot[1][1..], ["1", "2", "\\N"]);
    psql.ok(&["-c", "INSERT INTO notes VALUES (3, 'new')"])?;
    let change = next()?;
    assert!(
        change[0].parse::<u64>()? > epoch.parse::<u64>()?,
        "{change:?}"
    );
    assert_eq!(change[1..], ["1", "3", "new"]);
    // Ctrl-C: psql sends a cancel request, and the COPY ends with 57014.
    Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()?;
    let out = child.wait_with_output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("canceling statement"), "{stderr}");
    Ok(())
}
