//! Real drivers against a real server: psycopg 3 (named cursors, a
//! SUBSCRIBE cursor with FETCH timeouts), node-postgres with pg-cursor,
//! and pgjdbc with `setFetchSize`. The scripts live in `tests/clients/`;
//! `tests/clients/install.sh` (run by `scripts/test.sh`) installs the
//! drivers.

use std::process::Command;
use std::time::Duration;

use anyhow::{ensure, Result};
use eddy_tests::{run_with_timeout, TestServer};

#[test]
fn drivers_stream_through_cursors_and_subscriptions() -> Result<()> {
    let server = TestServer::start()?;
    let manifest_dir = eddy_tests::manifest_dir();
    let script = manifest_dir.join("clients/run.sh");
    let mut run = Command::new("bash");
    run.arg(script).arg(server.port().to_string());
    let output = run_with_timeout(run, Duration::from_secs(600))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    ensure!(
        output.status.success(),
        "a driver failed (run tests/clients/install.sh if one is missing):\n{stdout}\n{stderr}"
    );
    Ok(())
}
