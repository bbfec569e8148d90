//! Logging in: SCRAM-SHA-256 and cleartext passwords against verifiers in
//! the catalog, TLS from psql and the drivers (sslmode=require and
//! verify-full against a test CA), `--tls-required`, and Postgres's errors
//! (28P01 for a wrong password, 28000 for an unknown role or one that may
//! not log in). The drivers' scripts are in `tests/clients/`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use eddy_tests::{run_with_timeout, TestServer};

const SUPERUSER_PASSWORD: &str = "eddy-secret";

/// A CA and a server certificate for `localhost` and 127.0.0.1, made with
/// openssl.
struct Certificates {
    _dir: tempfile::TempDir,
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    password_file: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) -> Result<()> {
    let output = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .context("run openssl (tests/clients/install.sh installs it)")?;
    ensure!(
        output.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}

fn certificates() -> Result<Certificates> {
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    openssl(
        d,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "30",
            "-subj",
            "/CN=Eddy test CA",
        ],
    )?;
    openssl(
        d,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ],
    )?;
    std::fs::write(
        d.join("san.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )?;
    openssl(
        d,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.crt",
            "-days",
            "30",
            "-extfile",
            "san.ext",
        ],
    )?;
    std::fs::write(d.join("password"), format!("{SUPERUSER_PASSWORD}\n"))?;
    Ok(Certificates {
        ca: d.join("ca.crt"),
        cert: d.join("server.crt"),
        key: d.join("server.key"),
        password_file: d.join("password"),
        _dir: dir,
    })
}

impl Certificates {
    /// A server logging in with `auth`, with these certificates and the
    /// superuser's password, and `extra` arguments.
    fn server(&self, auth: &str, extra: &[&str]) -> Result<TestServer> {
        let path = |p: &PathBuf| p.to_str().expect("a UTF-8 temporary path").to_owned();
        let mut args = vec![
            "--auth".to_owned(),
            auth.to_owned(),
            "--superuser-password-file".to_owned(),
            path(&self.password_file),
            "--tls-cert".to_owned(),
            path(&self.cert),
            "--tls-key".to_owned(),
            path(&self.key),
        ];
        args.extend(extra.iter().map(|a| a.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        TestServer::start_with_args(&args)
    }
}

fn config(server: &TestServer, user: &str, password: &str) -> tokio_postgres::Config {
    let mut config = server.pg_config();
    config.user(user).password(password);
    config
}

/// The SQLSTATE and message a login fails with.
async fn login_error(config: &tokio_postgres::Config) -> Result<(String, String)> {
    match config.connect(tokio_postgres::NoTls).await {
        Ok(_) => bail!("logged in"),
        Err(e) => {
            let db = e
                .as_db_error()
                .with_context(|| format!("not a server error: {e}"))?;
            Ok((db.code().code().to_owned(), db.message().to_owned()))
        }
    }
}

fn psql(port: u16, conninfo: &str, sql: &str) -> Result<std::process::Output> {
    let mut cmd = Command::new("psql");
    cmd.arg(format!("{conninfo} host=localhost port={port} dbname=eddy"))
        .args(["-X", "-w", "-A", "-t", "-c", sql]);
    run_with_timeout(cmd, Duration::from_secs(30))
}

fn clients_dir() -> PathBuf {
    std::env::var_os("EDDY_CLIENTS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/eddy-clients")
        })
}

fn run_client(name: &str, mut cmd: Command) -> Result<()> {
    cmd.stdin(std::process::Stdio::null());
    let output = run_with_timeout(cmd, Duration::from_secs(300))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    println!("== {name}\n{stdout}");
    ensure!(
        output.status.success(),
        "{name} failed (run tests/clients/install.sh if a driver is missing):\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_over_tls_from_psql_and_drivers() -> Result<()> {
    let certs = certificates()?;
    let mut server = certs.server("scram", &[])?;
    let admin = eddy_tests::connect(&config(&server, "eddy", SUPERUSER_PASSWORD)).await?;
    admin
        .batch_execute(
            "CREATE USER app PASSWORD 'app-secret';
             CREATE ROLE nologin_role PASSWORD 'x';
             CREATE TABLE auth_numbers (n INT PRIMARY KEY);
             INSERT INTO auth_numbers VALUES (1), (2);
             GRANT SELECT ON auth_numbers TO app;",
        )
        .await?;

    // tokio-postgres, without TLS (not required here).
    let app = eddy_tests::connect(&config(&server, "app", "app-secret")).await?;
    let rows = app
        .query("SELECT current_user, count(*) FROM auth_numbers", &[])
        .await?;
    assert_eq!(rows[0].get::<_, String>(0), "app");
    assert_eq!(rows[0].get::<_, i64>(1), 2);
    let (code, message) = login_error(&config(&server, "app", "wrong")).await?;
    assert_eq!(
        (code.as_str(), message.as_str()),
        ("28P01", "password authentication failed for user \"app\"")
    );
    let (code, message) = login_error(&config(&server, "ghost", "x")).await?;
    assert_eq!(
        (code.as_str(), message.as_str()),
        ("28000", "role \"ghost\" does not exist")
    );
    let (code, message) = login_error(&config(&server, "nologin_role", "x")).await?;
    assert_eq!(
        (code.as_str(), message.as_str()),
        ("28000", "role \"nologin_role\" is not permitted to log in")
    );
    let mut no_password = server.pg_config();
    no_password.user("app");
    assert!(no_password.connect(tokio_postgres::NoTls).await.is_err());

    // psql: verify-full and require use TLS, with channel binding
    // (SCRAM-SHA-256-PLUS) when asked; without TLS is allowed here.
    let port = server.port();
    let ca = certs.ca.to_str().unwrap();
    for (mode, tls) in [
        (format!("sslmode=verify-full sslrootcert={ca}"), true),
        ("sslmode=require channel_binding=require".to_owned(), true),
        ("sslmode=disable".to_owned(), false),
    ] {
        let output = psql(
            port,
            &format!("user=app password=app-secret {mode}"),
            "SELECT current_user",
        )?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        ensure!(
            output.status.success(),
            "psql {mode}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert_eq!(stdout.trim(), "app", "psql {mode}");
        let info = psql(
            port,
            &format!("user=app password=app-secret {mode}"),
            "\\conninfo",
        )?;
        let info = String::from_utf8_lossy(&info.stdout);
        assert_eq!(info.contains("SSL connection"), tls, "psql {mode}: {info}");
    }
    let wrong = psql(port, "user=app password=wrong sslmode=require", "SELECT 1")?;
    let stderr = String::from_utf8_lossy(&wrong.stderr);
    assert!(
        stderr.contains("password authentication failed for user \"app\""),
        "{stderr}"
    );
    // Channel binding needs TLS: libpq refuses to log in without it.
    let unbound = psql(
        port,
        "user=app password=app-secret sslmode=disable channel_binding=require",
        "SELECT 1",
    )?;
    let stderr = String::from_utf8_lossy(&unbound.stderr);
    assert!(
        !unbound.status.success() && stderr.contains("channel binding"),
        "{stderr}"
    );
    // A certificate for another name fails verify-full.
    let mut cmd = Command::new("psql");
    cmd.arg(format!("host=127.0.0.2 port={port} user=app password=app-secret dbname=eddy sslmode=verify-full sslrootcert={ca}"))
        .args(["-X", "-w", "-c", "SELECT 1"]);
    let mismatch = run_with_timeout(cmd, Duration::from_secs(30))?;
    assert!(!mismatch.status.success());

    // The drivers.
    let dir = clients_dir();
    let clients = eddy_tests::manifest_dir().join("clients");
    let port = port.to_string();
    let mut python = Command::new(dir.join("venv/bin/python"));
    python.arg(clients.join("python/auth.py")).args([&port, ca]);
    run_client("python drivers (psycopg 3, psycopg2, asyncpg)", python)?;
    let mut node = Command::new("node");
    node.env("NODE_PATH", dir.join("node/node_modules"))
        .arg(clients.join("node/auth.js"))
        .args([&port, ca]);
    run_client("node-postgres", node)?;
    let mut java = Command::new("java");
    java.args(["-cp", "/usr/share/java/postgresql.jar"])
        .arg(clients.join("java/Auth.java"))
        .args([&port, ca]);
    run_client("pgjdbc", java)?;

    // Roles and verifiers survive a restart.
    let verifier = |client: tokio_postgres::Client| async move {
        let row = client
            .query_one(
                "SELECT rolpassword FROM pg_authid WHERE rolname = 'app'",
                &[],
            )
            .await?;
        anyhow::Ok(row.get::<_, String>(0))
    };
    let before = verifier(admin).await?;
    assert!(before.starts_with("SCRAM-SHA-256$4096:"), "{before}");
    server.restart()?;
    let admin = eddy_tests::connect(&config(&server, "eddy", SUPERUSER_PASSWORD)).await?;
    assert_eq!(verifier(admin).await?, before);
    let app = eddy_tests::connect(&config(&server, "app", "app-secret")).await?;
    let (code, _) = eddy_tests::sqlstate(&app, "INSERT INTO auth_numbers VALUES (3)").await?;
    assert_eq!(code, "42501");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_required_refuses_plain_connections() -> Result<()> {
    let certs = certificates()?;
    let server = certs.server("password", &["--tls-required"])?;
    let (code, message) = login_error(&config(&server, "eddy", SUPERUSER_PASSWORD)).await?;
    assert_eq!(code, "28000");
    assert!(message.contains("requires TLS"), "{message}");
    let port = server.port();
    let plain = psql(
        port,
        &format!("user=eddy password={SUPERUSER_PASSWORD} sslmode=disable"),
        "SELECT 1",
    )?;
    assert!(!plain.status.success());
    // The cleartext password travels inside TLS.
    let ca = certs.ca.to_str().unwrap();
    let tls = psql(
        port,
        &format!("user=eddy password={SUPERUSER_PASSWORD} sslmode=verify-full sslrootcert={ca}"),
        "SELECT current_user",
    )?;
    ensure!(
        tls.status.success(),
        "{}",
        String::from_utf8_lossy(&tls.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&tls.stdout).trim(), "eddy");
    let wrong = psql(port, "user=eddy password=nope sslmode=require", "SELECT 1")?;
    assert!(
        String::from_utf8_lossy(&wrong.stderr).contains("28P01")
            || String::from_utf8_lossy(&wrong.stderr).contains("password authentication failed")
    );
    Ok(())
}

#[test]
fn password_methods_need_a_superuser_password() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut cmd = eddy_tests::serve_command(dir.path())?;
    cmd.args(["--auth", "scram"])
        .env_remove("EDDY_SUPERUSER_PASSWORD");
    let output = run_with_timeout(cmd, Duration::from_secs(60))?;
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("needs a password for superuser \"eddy\""),
        "{stderr}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trust_lets_known_roles_in_by_name() -> Result<()> {
    let server = TestServer::start()?;
    let admin = server.connect().await?;
    admin.batch_execute("CREATE USER viewer").await?;
    let viewer = eddy_tests::connect(&config(&server, "viewer", "")).await?;
    let row = viewer.query_one("SELECT current_user", &[]).await?;
    assert_eq!(row.get::<_, String>(0), "viewer");
    let (code, message) = login_error(&config(&server, "stranger", "")).await?;
    assert_eq!(
        (code.as_str(), message.as_str()),
        ("28000", "role \"stranger\" does not exist")
    );
    Ok(())
}
