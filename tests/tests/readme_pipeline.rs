//! The README's Kafka pipeline, run as written: the two SQL blocks of its
//! "Kafka" section, statement by statement, against a real broker (tansu),
//! with what each persistent query and view holds checked in between.

use anyhow::{ensure, Context, Result};
use eddy_tests::kafka::{consume_all, Broker, BrokerStorage};
use eddy_tests::{sorted_text_rows, TestServer};

/// The SQL blocks of the README section that starts with `heading`.
fn readme_blocks(heading: &str) -> Result<Vec<String>> {
    let path = eddy_tests::manifest_dir().join("../README.md");
    let readme = std::fs::read_to_string(&path).with_context(|| format!("{path:?}"))?;
    let start = readme.find(heading).context("no such section")?;
    let section = &readme[start + heading.len()..];
    let section = &section[..section.find("\n## ").unwrap_or(section.len())];
    Ok(section
        .split("```sql\n")
        .skip(1)
        .filter_map(|rest| rest.split_once("```").map(|(block, _)| block.to_owned()))
        .collect())
}

/// A block's statements, without comments.
fn statements(block: &str) -> Vec<String> {
    let code: String = block
        .lines()
        .map(|line| line.split_once("--").map_or(line, |(code, _)| code))
        .collect::<Vec<_>>()
        .join("\n");
    code.split(';')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Runs each statement of `block` on its own, as psql sends them.
async fn run(client: &tokio_postgres::Client, block: &str) -> Result<()> {
    for statement in statements(block) {
        client
            .simple_query(&statement)
            .await
            .with_context(|| format!("README statement failed: {statement}"))?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_kafka_pipeline_runs_as_written() -> Result<()> {
    let blocks = readme_blocks("## Kafka\n")?;
    // The broker's start-up command, then the pipeline and the clean-up.
    ensure!(
        blocks.len() == 2,
        "expected 2 SQL blocks, found {}",
        blocks.len()
    );
    // DELETE TOPIC on tansu's SQLite storage removes every topic from its
    // metadata (see kafka_queries.rs), so the memory storage serves here.
    let broker = Broker::start_with(BrokerStorage::Memory).await?;
    let brokers = broker.brokers();
    let server = TestServer::start_with_args(&["--kafka-brokers", &brokers])?;
    let client = server.connect().await?;
    run(&client, &blocks[0]).await?;

    // `o.item` is `o_item`: both sources have an `item`.
    assert_eq!(
        sorted_text_rows(
            &client,
            "SELECT id, o_item, category, amount, city FROM enriched_orders"
        )
        .await?,
        [
            "1|apple|fruit|1.5|Oslo",
            "2|pear|fruit|2|Lund",
            "3|apple|fruit|0.5|Oslo"
        ]
    );
    assert_eq!(
        sorted_text_rows(
            &client,
            "SELECT item, to_timestamp(windowstart / 1000), orders, total FROM sales_per_hour"
        )
        .await?,
        [
            "apple|2026-01-01 10:00:00+00|1|1.5",
            "apple|2026-01-01 11:00:00+00|1|0.5",
            "pear|2026-01-01 10:00:00+00|1|2"
        ]
    );
    assert_eq!(
        sorted_text_rows(&client, "SELECT * FROM sales_by_city").await?,
        ["Lund|1|2", "Oslo|2|2"]
    );
    // The enriched stream's topic holds ksqlDB's records: keyed by the
    // join column, the other columns in the value.
    let mut enriched: Vec<(String, serde_json::Value)> = consume_all(&brokers, "ENRICHED_ORDERS")
        .await?
        .into_iter()
        .map(|(_, key, value)| {
            let key = String::from_utf8(key.unwrap_or_default())?;
            Ok((key, serde_json::from_slice(&value.unwrap_or_default())?))
        })
        .collect::<Result<_>>()?;
    enriched.sort_by_key(|(k, v)| (k.clone(), v.to_string()));
    assert_eq!(
        enriched[0],
        (
            "apple".to_owned(),
            serde_json::json!({"ID": 3, "CATEGORY": "fruit", "AMOUNT": 0.5, "CITY": "Oslo"})
        )
    );
    assert_eq!(enriched.len(), 3);

    run(&client, &blocks[1]).await?;
    assert_eq!(
        sorted_text_rows(
            &client,
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
        )
        .await?,
        ["eddy_dead_letters"]
    );
    Ok(())
}
