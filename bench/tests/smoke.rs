//! The Nexmark harness on a few thousand events: every query that runs
//! must match DataFusion's batch result, so the harness cannot rot. The
//! figures come from `eddy-bench nexmark`, never from this test.

use eddy_bench::nexmark::{self, Feed, Options};

#[tokio::test(flavor = "multi_thread")]
async fn every_runnable_query_matches_the_batch_result() {
    let queries = nexmark::queries().unwrap();
    let runnable: Vec<_> = queries.iter().filter(|q| q.runs()).collect();
    assert!(runnable.len() >= 15, "{} queries run", runnable.len());
    let mut failures = Vec::new();
    for query in runnable {
        let options = Options {
            query: query.name.clone(),
            events: 3_000,
            feed: Feed::Generator,
            max_rss: 4 << 30,
            seed: 11,
            brokers: None,
            latency_events: 0,
            latency_rate: 1,
        };
        match nexmark::run(&options).await {
            Ok(report) if report.mismatch.is_none() && report.stopped.is_none() => {
                assert!(
                    report.view_rows > 0 || query.name == "q2",
                    "{} is empty",
                    query.name
                );
            }
            Ok(report) => failures.push(format!(
                "{}: {:?} {:?}",
                query.name, report.stopped, report.mismatch
            )),
            Err(e) => failures.push(format!("{}: {e:#}", query.name)),
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}
