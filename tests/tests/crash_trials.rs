//! Crash trials. Each trial feeds a random mix of Kafka records (a stream
//! and an upsert table) and local-table DML into several views (aggregates,
//! joins, top-N, a view on a view), kills the server with SIGKILL at a
//! random moment (mid-epoch, mid-commit, during a CREATE MATERIALIZED VIEW's
//! backfill, during a DROP), restarts it, and checks that
//! - the stored stream holds every record of its topic once, by partition
//!   and offset, and the upsert table the last value of every key;
//! - the local table holds every acknowledged write (and the one in flight
//!   at the kill either whole or not at all);
//! - every view equals its query run as a batch over all of that; a view of
//!   final window results holds exactly the windows the watermark (each
//!   partition's latest record time, the earliest of them) has closed, and
//!   a left join bounded in time exactly the unmatched rows it has made
//!   final.
//!
//! `EDDY_CRASH_TRIALS` sets the number of trials (default 10) and
//! `EDDY_CRASH_SEED` the first seed (default 1); the 100-trial run is
//! `EDDY_CRASH_TRIALS=100 cargo test -p eddy-tests --test crash_trials -- --nocapture`.
//!
//! `EDDY_CRASH_BROKER=memory` runs them against tansu's memory storage,
//! which skips the rest of a batch when a consumer resumes inside it. The
//! stream may then lack records, but never silently: each trial that loses
//! some must have reported a broker fault, and the views must still equal
//! their queries over what was stored.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use eddy_tests::kafka::{consume_with_offsets, produce, Broker, BrokerStorage, Record};
use eddy_tests::{sorted_text_rows, text_rows, TestServer};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio_postgres::Client;

const SETUP: &str = "
    CREATE STREAM clicks (user_id BIGINT KEY, id BIGINT, amount BIGINT, p_time AS PROCTIME())
      WITH (kafka_topic='clicks', value_format='JSON', partitions=3);
    CREATE TABLE users (id BIGINT PRIMARY KEY, tier BIGINT)
      WITH (kafka_topic='users', value_format='JSON', partitions=2);
    CREATE TABLE accounts (id BIGINT PRIMARY KEY, user_id BIGINT, balance BIGINT);";

/// The views every trial keeps: name and query.
const VIEWS: &[(&str, &str)] = &[
    (
        "per_user",
        "SELECT user_id, count(*) AS n, sum(amount) AS total FROM clicks GROUP BY user_id",
    ),
    (
        "by_tier",
        "SELECT u.tier, count(*) AS n, sum(c.amount) AS total \
         FROM clicks c JOIN users u ON c.user_id = u.id GROUP BY u.tier",
    ),
    (
        "top_users",
        "SELECT user_id, total FROM per_user ORDER BY total DESC, user_id LIMIT 5",
    ),
    (
        "balances",
        "SELECT a.user_id, sum(a.balance) AS b, count(*) AS n, max(u.tier) AS tier \
         FROM accounts a LEFT JOIN users u ON a.user_id = u.id GROUP BY a.user_id",
    ),
    (
        "tiers",
        "SELECT tier, count(*) AS n FROM users GROUP BY tier",
    ),
    (
        "spenders",
        "SELECT c.user_id, count(*) AS n, sum(a.balance) AS b \
         FROM clicks c JOIN accounts a ON c.user_id = a.user_id GROUP BY c.user_id",
    ),
    // Record times only grow within a partition, so no record is late and
    // the windows hold what the query over every record says.
    (
        "windowed",
        "SELECT user_id % 5 AS k, count(*) AS n, sum(amount) AS total FROM clicks \
         WINDOW TUMBLING (SIZE 20 MILLISECONDS) GROUP BY user_id % 5",
    ),
    // Sessions per key, merged as records bridge them.
    (
        "sessions",
        "SELECT user_id % 5 AS k, count(*) AS n, sum(amount) AS total FROM clicks \
         WINDOW SESSION (3 MILLISECONDS) GROUP BY user_id % 5",
    ),
    // The busiest key of each window: the max per window and the join on
    // the window forget the windows that closed.
    (
        "busiest",
        "SELECT a.k, a.ws, a.n FROM (SELECT user_id % 5 AS k, count(*) AS n, \
         window_start AS ws FROM TUMBLE(clicks, rowtime, INTERVAL '20 milliseconds') \
         GROUP BY user_id % 5, window_start) a JOIN (SELECT max(n) AS top, ws FROM \
         (SELECT count(*) AS n, window_start AS ws FROM TUMBLE(clicks, rowtime, \
         INTERVAL '20 milliseconds') GROUP BY user_id % 5, window_start) c GROUP BY ws) m \
         ON a.ws = m.ws AND a.n = m.top",
    ),
    // Windows of processing time: a replay must give each record the
    // ingest time the stored stream keeps.
    (
        "by_ingest",
        "SELECT user_id % 5 AS k, window_start, count(*) AS n, sum(amount) AS total \
         FROM TUMBLE(clicks, p_time, INTERVAL '50 milliseconds') \
         GROUP BY user_id % 5, window_start",
    ),
    // Nor is any late to a join bounded in time: its state expires, and it
    // is its query.
    (
        "paired",
        "SELECT a.user_id % 3 AS k, count(*) AS n FROM clicks a JOIN clicks b \
         WITHIN 2 MILLISECONDS ON a.user_id = b.user_id AND a.id <> b.id \
         WHERE a.user_id < 6 GROUP BY a.user_id % 3",
    ),
];

/// A left self-join within a millisecond: a click with no other click of
/// its user that close is in it once no later click can match it.
const LONELY_VIEW: (&str, &str) = (
    "lonely",
    "SELECT a.id, b.id AS other FROM clicks a LEFT JOIN clicks b WITHIN 1 MILLISECOND \
     ON a.user_id = b.user_id AND a.id <> b.id WHERE a.user_id < 3",
);

/// Final results of `windowed`'s windows, each once it has closed.
const FINAL_VIEW: (&str, &str) = (
    "windowed_final",
    "SELECT user_id % 5 AS k, count(*) AS n, sum(amount) AS total FROM clicks \
     WINDOW TUMBLING (SIZE 20 MILLISECONDS, GRACE PERIOD 5 MILLISECONDS) \
     GROUP BY user_id % 5 EMIT FINAL",
);

/// A view that some trials create, and others drop, as the kill comes.
const LATE_VIEW: (&str, &str) = (
    "late",
    "SELECT user_id % 4 AS k, count(*) AS n, max(amount) AS hi FROM clicks GROUP BY user_id % 4",
);

/// What some trials replace the late view by (CREATE OR REPLACE) as the
/// kill comes.
const REPLACED_LATE_SQL: &str =
    "SELECT user_id % 3 AS k, count(*) AS n, min(amount) AS lo FROM clicks GROUP BY user_id % 3";

const USERS: i64 = 20;
const ACCOUNTS: i64 = 40;

fn trials() -> (u64, u64) {
    let env = |name: &str, default: u64| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    (env("EDDY_CRASH_SEED", 1), env("EDDY_CRASH_TRIALS", 10))
}

fn broker_storage() -> BrokerStorage {
    match std::env::var("EDDY_CRASH_BROKER").as_deref() {
        Ok("memory") => BrokerStorage::Memory,
        _ => BrokerStorage::Sqlite,
    }
}

/// What the kill interrupts, besides ingest and DML.
#[derive(Debug, Clone, Copy)]
enum Moment {
    Ingest,
    Create,
    Drop,
    Replace,
}

/// One write to `accounts`, and its effect on a model of the table.
#[derive(Debug, Clone)]
enum Write {
    Insert { id: i64, user: i64, balance: i64 },
    Add { id: i64, delta: i64 },
    AddForUser { user: i64, delta: i64 },
    Delete { id: i64 },
}

type Accounts = BTreeMap<i64, (i64, i64)>;

impl Write {
    fn random(rng: &mut StdRng) -> Write {
        let id = rng.random_range(0..ACCOUNTS);
        match rng.random_range(0..10) {
            0..=3 => Write::Insert {
                id,
                user: rng.random_range(0..USERS + 5),
                balance: rng.random_range(0..1_000),
            },
            4..=6 => Write::Add {
                id,
                delta: rng.random_range(-50..50),
            },
            7 => Write::AddForUser {
                user: rng.random_range(0..USERS),
                delta: rng.random_range(-5..5),
            },
            _ => Write::Delete { id },
        }
    }

    fn sql(&self) -> String {
        match self {
            Write::Insert { id, user, balance } => {
                format!("INSERT INTO accounts VALUES ({id}, {user}, {balance})")
            }
            Write::Add { id, delta } => {
                format!("UPDATE accounts SET balance = balance + {delta} WHERE id = {id}")
            }
            Write::AddForUser { user, delta } => {
                format!("UPDATE accounts SET balance = balance + {delta} WHERE user_id = {user}")
            }
            Write::Delete { id } => format!("DELETE FROM accounts WHERE id = {id}"),
        }
    }

    /// Applies the write to the model; false if the server must refuse it.
    fn apply(&self, accounts: &mut Accounts) -> bool {
        match self {
            Write::Insert { id, user, balance } => {
                if accounts.contains_key(id) {
                    return false;
                }
                accounts.insert(*id, (*user, *balance));
            }
            Write::Add { id, delta } => {
                if let Some(row) = accounts.get_mut(id) {
                    row.1 += delta;
                }
            }
            Write::AddForUser { user, delta } => {
                for row in accounts.values_mut().filter(|r| r.0 == *user) {
                    row.1 += delta;
                }
            }
            Write::Delete { id } => {
                accounts.remove(id);
            }
        }
        true
    }
}

fn text_rows_of(accounts: &Accounts) -> Vec<String> {
    let mut rows: Vec<String> = accounts
        .iter()
        .map(|(id, (user, balance))| format!("{id}|{user}|{balance}"))
        .collect();
    rows.sort();
    rows
}

/// The DML a writer task has sent: the writes acknowledged, in order, and
/// the one in flight.
#[derive(Debug, Default)]
struct Sent {
    acknowledged: Vec<Write>,
    in_flight: Option<Write>,
}

/// Sends random writes until the server goes away.
async fn write_until_killed(client: Client, mut rng: StdRng, sent: Arc<Mutex<Sent>>) {
    loop {
        let write = Write::random(&mut rng);
        sent.lock().expect("sent").in_flight = Some(write.clone());
        let result = client.batch_execute(&write.sql()).await;
        let refused = match &result {
            Ok(()) => false,
            Err(e) if e.code().is_some() => true,
            Err(_) => return,
        };
        {
            let mut sent = sent.lock().expect("sent");
            let write = sent.in_flight.take().expect("in flight");
            // Only a duplicate key is refused; the model checks that below.
            if refused && !matches!(write, Write::Insert { .. }) {
                panic!("{} was refused: {result:?}", write.sql());
            }
            sent.acknowledged.push(write);
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..4))).await;
    }
}

fn click(rng: &mut StdRng, id: i64) -> Record {
    let user: i64 = rng.random_range(0..USERS + 10);
    let amount: i64 = rng.random_range(1..100);
    (
        Some(user.to_be_bytes().to_vec()),
        Some(format!(r#"{{"id": {id}, "amount": {amount}}}"#).into_bytes()),
    )
}

fn user_update(rng: &mut StdRng) -> Record {
    let id: i64 = rng.random_range(0..USERS);
    let value = (rng.random_range(0..10) > 0)
        .then(|| format!(r#"{{"tier": {}}}"#, rng.random_range(0..4)).into_bytes());
    (Some(id.to_be_bytes().to_vec()), value)
}

/// Produces `chunks` of clicks and user updates, pausing between them so
/// that the kill lands while records still arrive.
async fn produce_chunks(brokers: String, chunks: Vec<(Vec<Record>, Vec<Record>)>) -> Result<()> {
    for (clicks, users) in chunks {
        produce(&brokers, "clicks", None, &clicks).await?;
        produce(&brokers, "users", None, &users).await?;
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
    Ok(())
}

/// Checks every stored relation against its input and every view against
/// its query; returns the rows checked.
async fn check(
    client: &Client,
    brokers: &str,
    sent: &Sent,
    before: &Accounts,
    seed: u64,
    storage: BrokerStorage,
) -> Result<usize> {
    // The stream holds each record of its topic once.
    let mut topic: Vec<String> = consume_with_offsets(brokers, "clicks")
        .await?
        .into_iter()
        .map(|r| {
            let value: serde_json::Value = serde_json::from_slice(&r.value.unwrap_or_default())?;
            Ok(format!("{}|{}|{}", r.partition, r.offset, value["id"]))
        })
        .collect::<Result<_>>()?;
    topic.sort();
    let stored = sorted_text_rows(client, "SELECT rowpartition, rowoffset, id FROM clicks").await?;
    if stored != topic && storage == BrokerStorage::Memory {
        // A broker that skips records must have been caught doing so.
        let status = text_rows(client, "SHOW QUERIES").await?;
        ensure!(
            status.iter().any(|q| q.contains("broker fault")),
            "seed {seed}: clicks lost {} records and no broker fault was reported: {status:?}",
            topic.len() - stored.len()
        );
        println!(
            "trial {seed}: the broker skipped {} records; reported as a broker fault",
            topic.len() - stored.len()
        );
    } else if stored != topic {
        let missing: Vec<_> = topic
            .iter()
            .filter(|r| !stored.contains(r))
            .take(5)
            .collect();
        let extra: Vec<_> = stored
            .iter()
            .filter(|r| !topic.contains(r))
            .take(5)
            .collect();
        bail!(
            "seed {seed}: clicks holds {} rows, its topic {}; missing {missing:?}, extra {extra:?}",
            stored.len(),
            topic.len()
        );
    }
    if storage == BrokerStorage::Memory {
        // The upsert table may have lost records too; the views are checked.
        return check_views(client, seed).await;
    }
    // The upsert table holds each key's last value.
    let mut users = BTreeMap::new();
    for r in consume_with_offsets(brokers, "users").await? {
        let key = i64::from_be_bytes(r.key.unwrap_or_default().try_into().expect("8-byte key"));
        match r.value {
            Some(v) => {
                let value: serde_json::Value = serde_json::from_slice(&v)?;
                users.insert(key, format!("{key}|{}", value["tier"]))
            }
            None => users.remove(&key),
        };
    }
    let expected_users: Vec<String> = users.into_values().collect();
    let stored_users = sorted_text_rows(client, "SELECT id, tier FROM users").await?;
    ensure!(
        stored_users == {
            let mut e = expected_users.clone();
            e.sort();
            e
        },
        "seed {seed}: users holds {stored_users:?}, its topic says {expected_users:?}"
    );
    // The local table holds every acknowledged write, and the one in
    // flight whole or not at all.
    let mut model = before.clone();
    for write in &sent.acknowledged {
        write.apply(&mut model);
    }
    let without = text_rows_of(&model);
    let with = sent.in_flight.as_ref().map(|write| {
        let mut model = model.clone();
        write.apply(&mut model);
        text_rows_of(&model)
    });
    let accounts = sorted_text_rows(client, "SELECT id, user_id, balance FROM accounts").await?;
    ensure!(
        accounts == without || with.as_ref() == Some(&accounts),
        "seed {seed}: accounts holds {accounts:?}\nacknowledged writes give {without:?}\n\
         with the one in flight {with:?}"
    );
    Ok(stored.len() + stored_users.len() + accounts.len() + check_views(client, seed).await?)
}

/// Checks that every view equals its query; returns the rows checked.
async fn check_views(client: &Client, seed: u64) -> Result<usize> {
    let mut checked = 0;
    let late_exists = !sorted_text_rows(
        client,
        &format!(
            "SELECT matviewname FROM pg_matviews WHERE matviewname = '{}'",
            LATE_VIEW.0
        ),
    )
    .await?
    .is_empty();
    if late_exists {
        // The late view is the one it was created as, or the one that
        // replaced it: whichever, exactly.
        let (name, sql) = LATE_VIEW;
        let view = sorted_text_rows(client, &format!("SELECT * FROM {name}")).await?;
        let mut matched = false;
        for sql in [sql, REPLACED_LATE_SQL] {
            matched |= sorted_text_rows(client, sql).await? == view;
        }
        ensure!(
            matched,
            "seed {seed}: view {name} is neither its query nor its replacement's\nview: {view:?}"
        );
        checked += view.len();
    }
    for (name, sql) in VIEWS.iter().copied() {
        let view = sorted_text_rows(client, &format!("SELECT * FROM {name}")).await?;
        let query = sorted_text_rows(client, sql).await?;
        ensure!(
            view == query,
            "seed {seed}: view {name} differs from its query {sql}\nview:  {view:?}\nquery: {query:?}"
        );
        checked += view.len();
    }
    // The final view holds the windows closed by the watermark, as the
    // continuous one has them.
    let watermark = text_rows(
        client,
        "SELECT coalesce(CAST(date_part('epoch', min(latest)) * 1000 AS BIGINT), 0) \
         FROM (SELECT max(rowtime) AS latest FROM clicks GROUP BY rowpartition) p",
    )
    .await?;
    let closed = sorted_text_rows(
        client,
        &format!(
            "SELECT * FROM windowed WHERE windowend + 5 <= {}",
            watermark[0]
        ),
    )
    .await?;
    let finals = sorted_text_rows(client, &format!("SELECT * FROM {}", FINAL_VIEW.0)).await?;
    ensure!(
        finals == closed,
        "seed {seed}: {} differs from the windows closed by {watermark:?}\nview:   {finals:?}\nclosed: {closed:?}",
        FINAL_VIEW.0
    );
    // The left join holds every match, and the clicks without one that
    // the watermark has made final.
    let lonely = sorted_text_rows(client, &format!("SELECT * FROM {}", LONELY_VIEW.0)).await?;
    let final_rows = sorted_text_rows(
        client,
        "SELECT a.id, b.id AS other FROM clicks a LEFT JOIN clicks b \
         ON a.user_id = b.user_id AND a.id <> b.id \
         AND b.rowtime BETWEEN a.rowtime - INTERVAL '1 millisecond' \
         AND a.rowtime + INTERVAL '1 millisecond' \
         WHERE a.user_id < 3 AND (b.id IS NOT NULL OR a.rowtime + INTERVAL '1 millisecond' < \
         (SELECT min(latest) FROM (SELECT max(rowtime) AS latest FROM clicks \
         GROUP BY rowpartition) p))",
    )
    .await?;
    ensure!(
        lonely == final_rows,
        "seed {seed}: {} differs from the join's final rows\nview:  {lonely:?}\nfinal: {final_rows:?}",
        LONELY_VIEW.0
    );
    Ok(checked + finals.len() + lonely.len())
}

struct Recovery {
    answered: Duration,
    caught_up: Duration,
}

/// `text` without terminal colour codes.
fn without_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            chars.by_ref().find(|&c| c == 'm');
        } else {
            out.push(c);
        }
    }
    out
}

async fn trial(seed: u64) -> Result<Recovery> {
    let mut rng = StdRng::seed_from_u64(seed);
    let storage = broker_storage();
    let broker = match storage {
        BrokerStorage::Sqlite => Broker::start().await?,
        BrokerStorage::Memory => Broker::start_with(storage).await?,
    };
    let brokers = broker.brokers();
    // Checkpoints every epoch or so, every second, or never before the
    // crash: the restart replays none, some or all of the journal.
    let interval = ["50ms", "1s", "1h"][rng.random_range(0..3)];
    let mut server = TestServer::start_with_args(&[
        "--kafka-brokers",
        &brokers,
        "--checkpoint-interval",
        interval,
    ])?;
    let client = server.connect().await?;
    client.batch_execute(SETUP).await?;
    let moment = match rng.random_range(0..5) {
        0 => Moment::Create,
        1 => Moment::Drop,
        2 => Moment::Replace,
        _ => Moment::Ingest,
    };
    for (name, sql) in VIEWS.iter().chain([&FINAL_VIEW, &LONELY_VIEW]) {
        client
            .batch_execute(&format!("CREATE MATERIALIZED VIEW {name} AS {sql}"))
            .await
            .with_context(|| format!("create {name}"))?;
    }
    if matches!(moment, Moment::Drop | Moment::Replace) {
        let (name, sql) = LATE_VIEW;
        client
            .batch_execute(&format!("CREATE MATERIALIZED VIEW {name} AS {sql}"))
            .await?;
    }

    // Before the crash: some of everything, absorbed.
    let mut next_click = 0;
    let mut chunk = |rng: &mut StdRng, clicks: usize, users: usize| {
        let c: Vec<Record> = (0..clicks)
            .map(|_| {
                next_click += 1;
                click(rng, next_click)
            })
            .collect();
        let u: Vec<Record> = (0..users).map(|_| user_update(rng)).collect();
        (c, u)
    };
    let clicks = rng.random_range(200..2_000);
    let first = chunk(&mut rng, clicks, 40);
    produce_chunks(brokers.clone(), vec![first]).await?;
    let mut before = Accounts::new();
    for _ in 0..30 {
        let write = Write::random(&mut rng);
        let applied = write.apply(&mut before);
        let result = client.batch_execute(&write.sql()).await;
        ensure!(result.is_ok() == applied, "{}: {result:?}", write.sql());
    }
    client.batch_execute("FLUSH").await?;

    // The crash: records arriving, writes in flight, maybe DDL.
    let chunks: Vec<_> = (0..rng.random_range(5..30))
        .map(|_| {
            let clicks = rng.random_range(100..1_500);
            let users = rng.random_range(0..20);
            chunk(&mut rng, clicks, users)
        })
        .collect();
    let producer = tokio::spawn(produce_chunks(brokers.clone(), chunks));
    let sent = Arc::new(Mutex::new(Sent::default()));
    let writer = tokio::spawn(write_until_killed(
        server.connect().await?,
        StdRng::seed_from_u64(seed ^ 0x5eed),
        sent.clone(),
    ));
    let ddl_client = server.connect().await?;
    let ddl = tokio::spawn(async move {
        let (name, sql) = LATE_VIEW;
        let statement = match moment {
            Moment::Create => format!("CREATE MATERIALIZED VIEW {name} AS {sql}"),
            Moment::Drop => format!("DROP MATERIALIZED VIEW {name}"),
            Moment::Replace => {
                format!("CREATE OR REPLACE MATERIALIZED VIEW {name} AS {REPLACED_LATE_SQL}")
            }
            Moment::Ingest => return,
        };
        let _ = ddl_client.batch_execute(&statement).await;
    });
    let delay = match moment {
        Moment::Ingest => rng.random_range(20..1_500),
        Moment::Create | Moment::Drop | Moment::Replace => rng.random_range(0..150),
    };
    tokio::time::sleep(Duration::from_millis(delay)).await;
    drop(client);
    server.kill9()?;
    let _ = writer.await;
    let _ = ddl.await;
    producer.await??;

    // Recovery.
    let restarted = Instant::now();
    server.restart()?;
    let client = server.connect().await?;
    client.batch_execute("SELECT 1").await?;
    let answered = restarted.elapsed();
    client.batch_execute("FLUSH").await?;
    let caught_up = restarted.elapsed();

    let sent = std::mem::take(&mut *sent.lock().expect("sent"));
    let rows = check(&client, &brokers, &sent, &before, seed, storage).await?;
    let stderr = server.stderr();
    ensure!(
        !stderr.contains("panicked"),
        "seed {seed}: the server panicked:\n{stderr}"
    );
    ensure!(
        storage == BrokerStorage::Memory || !stderr.contains("broker fault"),
        "seed {seed}: the server reported a broker fault:\n{stderr}"
    );
    let replayed = without_ansi(&stderr);
    let replayed = replayed
        .split("views caught up from the journal epochs=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or("0");
    println!(
        "trial {seed}: {moment:?} at {delay} ms, checkpoints every {interval}, {replayed} epochs \
         replayed, {} writes acknowledged, {rows} rows checked; first answer {} ms, caught up {} \
         ms after restart",
        sent.acknowledged.len(),
        answered.as_millis(),
        caught_up.as_millis()
    );
    Ok(Recovery {
        answered,
        caught_up,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn views_are_exact_after_kill_9_at_random_moments() -> Result<()> {
    let (first, count) = trials();
    let mut recoveries = Vec::new();
    for seed in first..first + count {
        recoveries.push(trial(seed).await?);
    }
    let max = |f: fn(&Recovery) -> Duration| recoveries.iter().map(f).max().unwrap_or_default();
    let mean = |f: fn(&Recovery) -> Duration| {
        recoveries.iter().map(f).sum::<Duration>() / recoveries.len().max(1) as u32
    };
    println!(
        "{count} of {count} trials exact; first answer after restart: mean {} ms, max {} ms; \
         caught up: mean {} ms, max {} ms",
        mean(|r| r.answered).as_millis(),
        max(|r| r.answered).as_millis(),
        mean(|r| r.caught_up).as_millis(),
        max(|r| r.caught_up).as_millis()
    );
    Ok(())
}
