//! ksqlDB's scalar and aggregate functions over a real broker (tansu), for
//! the rows of docs/ksqldb.md that no other Kafka test covers. Records are
//! read from a topic, each function runs in a persistent query, and its
//! result is checked in the records the query writes (field names upper-
//! cased, as ksqlDB writes them). Array and map results are also checked
//! in one-off queries over the records read. Forms Eddy refuses fail with
//! their SQLSTATE.

use std::collections::BTreeMap;
use std::f64::consts::PI;

use anyhow::{Context, Result};
use eddy_tests::kafka::{consume_all, json_record, produce, server_with_broker, values_by_key};
use eddy_tests::{sorted_text_rows, sqlstate, text_rows};
use serde_json::{json, Value};

/// The last value of each key of a changelog topic: the table's rows now.
async fn latest_by_key(brokers: &str, topic: &str) -> Result<BTreeMap<String, Value>> {
    let mut out = BTreeMap::new();
    for (_, key, value) in consume_all(brokers, topic).await? {
        let key = String::from_utf8(key.unwrap_or_default())?;
        let value = value.context("expected a value, got a tombstone")?;
        out.insert(key, serde_json::from_slice::<Value>(&value)?);
    }
    Ok(out)
}

/// Checks that `value` has exactly these numeric fields, each equal to
/// its expected value within a rounding error.
fn assert_numbers(value: &Value, expected: &[(&str, f64)]) {
    assert_eq!(
        value.as_object().map(|o| o.len()),
        Some(expected.len()),
        "{value}"
    );
    for (field, want) in expected {
        let got = value[*field].as_f64();
        assert!(
            got.is_some_and(|got| (got - want).abs() <= 1e-9 * want.abs().max(1.0)),
            "{field}: expected {want}, got {} in {value}",
            value[*field]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scalar_functions_run_in_persistent_queries() -> Result<()> {
    let (broker, _server, client) = server_with_broker().await?;
    let brokers = broker.brokers();
    client
        .batch_execute(
            "CREATE STREAM src (id VARCHAR KEY, s VARCHAR, note VARCHAR, n INT, d DOUBLE, \
               ms BIGINT, js VARCHAR, tags ARRAY<INT>, attrs MAP<VARCHAR, INT>) \
               WITH (kafka_topic='src', value_format='JSON', partitions=1)",
        )
        .await?;
    let queries = [
        // String: LCASE, UCASE, LEN, CONCAT, CONCAT_WS (NULLs skipped),
        // INITCAP (words split at any non-alphanumeric character), INSTR,
        // LPAD, RPAD, REPLACE, REGEXP_REPLACE (the first match; all with
        // 'g'), SPLIT (an empty delimiter keeps the string whole),
        // SUBSTRING (a negative position is before the start), TRIM, CHR,
        // `+` between strings.
        "CREATE STREAM out_strings AS SELECT id, \
           LCASE(s) AS s_lcase, UCASE(s) AS s_ucase, LEN(s) AS s_len, \
           CONCAT(s, '!') AS s_concat, CONCAT_WS('-', s, note) AS s_concat_ws, \
           INITCAP(s) AS s_initcap, INSTR(s, 'o') AS s_instr, \
           LPAD(id, 3, '0') AS s_lpad, RPAD(id, 3, '.') AS s_rpad, \
           REPLACE(s, 'l', 'L') AS s_replace, \
           REGEXP_REPLACE(s, '[a-z]', '_') AS s_regexp_first, \
           REGEXP_REPLACE(s, '[a-z]', '_', 'g') AS s_regexp_all, \
           SPLIT(s, ',') AS s_split, SPLIT(s, '') AS s_split_empty, \
           SUBSTRING(s, 2, 3) AS s_substring, SUBSTRING(s, 7) AS s_substring_rest, \
           SUBSTRING(s, -1, 3) AS s_substring_negative, \
           TRIM(CONCAT('  ', s, '  ')) AS s_trim, CHR(n + 72) AS s_chr, \
           s + '!' + id AS s_plus \
         FROM src EMIT CHANGES",
        // Numeric: ABS, CEIL, FLOOR, ROUND (halves away from zero, a DOUBLE
        // stays a DOUBLE), SQRT, EXP, LN, LOG (base 10, or a given base),
        // POWER, GREATEST, LEAST, CBRT, SIN, COS, ATAN2, DEGREES, RADIANS,
        // PI.
        "CREATE STREAM out_math AS SELECT id, \
           ABS(n) AS m_abs, CEIL(d) AS m_ceil, FLOOR(d) AS m_floor, ROUND(d) AS m_round, \
           SQRT(d * d) AS m_sqrt, EXP(d) AS m_exp, LN(ABS(d)) AS m_ln, \
           LOG(ABS(d) * 40) AS m_log10, LOG(2, ABS(d) * 4) AS m_log2, \
           POWER(n, 2) AS m_power, GREATEST(n, 0) AS m_greatest, LEAST(n, 0) AS m_least, \
           CBRT(d * d * d) AS m_cbrt, SIN(d) AS m_sin, COS(d) AS m_cos, \
           ATAN2(d, 1) AS m_atan2, DEGREES(PI()) AS m_degrees, RADIANS(d * 72) AS m_radians \
         FROM src EMIT CHANGES",
        // Null handling, conditionals and operators: COALESCE, IFNULL,
        // NULLIF, CONCAT (a NULL counts as empty), CASE, LIKE, BETWEEN, IN;
        // and CAST.
        "CREATE STREAM out_conditionals AS SELECT id, \
           COALESCE(note, 'none') AS x_coalesce, IFNULL(note, 'none') AS x_ifnull, \
           NULLIF(n, 4) AS x_nullif, CONCAT(note, '!') AS x_concat, \
           CASE WHEN n > 0 THEN 'pos' WHEN n < 0 THEN 'neg' ELSE 'zero' END AS x_case, \
           s LIKE 'hello%' AS x_like, n BETWEEN -10 AND 0 AS x_between, \
           id IN ('b', 'c') AS x_in, \
           CAST(n AS VARCHAR) AS x_text, CAST(n AS DOUBLE) AS x_double, \
           CAST(CAST(n AS VARCHAR) AS BIGINT) AS x_bigint \
         FROM src EMIT CHANGES",
        // Date and time: TIMESTAMPTOSTRING (UTC), STRINGTOTIMESTAMP,
        // FROM_UNIXTIME (seconds); JSON: EXTRACTJSONFIELD.
        "CREATE STREAM out_times AS SELECT id, \
           TIMESTAMPTOSTRING(ms, 'yyyy-MM-dd HH:mm:ss.SSS') AS t_text, \
           TIMESTAMPTOSTRING(ms, 'yyyy-MM-dd', 'UTC') AS t_day, \
           STRINGTOTIMESTAMP(TIMESTAMPTOSTRING(ms, 'yyyy-MM-dd HH:mm:ss'), \
             'yyyy-MM-dd HH:mm:ss') AS t_parsed, \
           FROM_UNIXTIME(ms / 1000) AS t_unix, \
           EXTRACTJSONFIELD(js, '$.user.name') AS j_name, \
           EXTRACTJSONFIELD(js, '$.user.tags[1]') AS j_tag \
         FROM src EMIT CHANGES",
        // Collections: ARRAY[...], ARRAY_LENGTH (cast: DataFusion's result
        // is unsigned, which no Kafka column holds), ARRAY_CONTAINS,
        // ARRAY_DISTINCT, ARRAY_JOIN, ARRAY_MAX, ARRAY_MIN, ARRAY_SORT,
        // ARRAY_REMOVE (the first equal element), ARRAY_CONCAT,
        // ARRAY_UNION, ARRAY_EXCEPT, ARRAY_INTERSECT, GENERATE_SERIES,
        // MAP(k := v), MAP_KEYS, MAP_VALUES, AS_MAP.
        "CREATE STREAM out_collections AS SELECT id, \
           ARRAY[n, 0] AS c_array, CAST(ARRAY_LENGTH(tags) AS BIGINT) AS c_length, \
           ARRAY_CONTAINS(tags, 2) AS c_contains, ARRAY_DISTINCT(tags) AS c_distinct, \
           ARRAY_JOIN(tags, '-') AS c_join, ARRAY_MAX(tags) AS c_max, \
           ARRAY_MIN(tags) AS c_min, ARRAY_SORT(tags) AS c_sort, \
           ARRAY_REMOVE(tags, 3) AS c_remove, ARRAY_CONCAT(tags, ARRAY[n]) AS c_concat, \
           ARRAY_SORT(ARRAY_UNION(tags, ARRAY[n])) AS c_union, \
           ARRAY_SORT(ARRAY_EXCEPT(tags, ARRAY[ARRAY_MAX(tags)])) AS c_except, \
           ARRAY_INTERSECT(tags, ARRAY[ARRAY_MIN(tags)]) AS c_intersect, \
           GENERATE_SERIES(0, ABS(n), 2) AS c_series, \
           MAP('n' := n, 'two' := 2) AS c_map, \
           MAP_KEYS(attrs) AS c_map_keys, MAP_VALUES(attrs) AS c_map_values, \
           AS_MAP(ARRAY['x', 'y'], ARRAY[n, ARRAY_MAX(tags)]) AS c_as_map \
         FROM src EMIT CHANGES",
    ];
    for sql in queries {
        client
            .batch_execute(sql)
            .await
            .with_context(|| sql.to_owned())?;
    }
    produce(
        &brokers,
        "src",
        Some(0),
        &[
            json_record(
                "a",
                json!({"s": "hello wORLD", "note": "x", "n": -7, "d": 2.5,
                       "ms": 1_600_000_000_123_i64,
                       "js": r#"{"user": {"name": "ann", "tags": ["p", "q"]}}"#,
                       "tags": [3, 1, 3, 2], "attrs": {"k1": 1, "k2": 2}}),
            ),
            json_record(
                "b",
                json!({"s": "a,b,,c", "note": null, "n": 4, "d": -2.5, "ms": 0,
                       "js": "not json", "tags": [5], "attrs": {"z": 26}}),
            ),
        ],
    )
    .await?;
    client.batch_execute("FLUSH").await?;
    assert_eq!(
        text_rows(&client, "SELECT count(*) FROM eddy_dead_letters").await?,
        ["0"]
    );

    assert_eq!(
        values_by_key(&brokers, "OUT_STRINGS").await?,
        [
            (
                "a".to_owned(),
                json!({"S_LCASE": "hello world", "S_UCASE": "HELLO WORLD", "S_LEN": 11,
                       "S_CONCAT": "hello wORLD!", "S_CONCAT_WS": "hello wORLD-x",
                       "S_INITCAP": "Hello World", "S_INSTR": 5,
                       "S_LPAD": "00a", "S_RPAD": "a..", "S_REPLACE": "heLLo wORLD",
                       "S_REGEXP_FIRST": "_ello wORLD", "S_REGEXP_ALL": "_____ _ORLD",
                       "S_SPLIT": ["hello wORLD"], "S_SPLIT_EMPTY": ["hello wORLD"],
                       "S_SUBSTRING": "ell", "S_SUBSTRING_REST": "wORLD",
                       "S_SUBSTRING_NEGATIVE": "h", "S_TRIM": "hello wORLD",
                       "S_CHR": "A", "S_PLUS": "hello wORLD!a"})
            ),
            (
                "b".to_owned(),
                json!({"S_LCASE": "a,b,,c", "S_UCASE": "A,B,,C", "S_LEN": 6,
                       "S_CONCAT": "a,b,,c!", "S_CONCAT_WS": "a,b,,c",
                       "S_INITCAP": "A,B,,C", "S_INSTR": 0,
                       "S_LPAD": "00b", "S_RPAD": "b..", "S_REPLACE": "a,b,,c",
                       "S_REGEXP_FIRST": "_,b,,c", "S_REGEXP_ALL": "_,_,,_",
                       "S_SPLIT": ["a", "b", "", "c"], "S_SPLIT_EMPTY": ["a,b,,c"],
                       "S_SUBSTRING": ",b,", "S_SUBSTRING_REST": "",
                       "S_SUBSTRING_NEGATIVE": "a", "S_TRIM": "a,b,,c",
                       "S_CHR": "L", "S_PLUS": "a,b,,c!b"})
            ),
        ]
    );

    let math = values_by_key(&brokers, "OUT_MATH").await?;
    let keys: Vec<&str> = math.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["a", "b"], "{math:?}");
    let (a, b) = (&math[0].1, &math[1].1);
    assert_numbers(
        a,
        &[
            ("M_ABS", 7.0),
            ("M_CEIL", 3.0),
            ("M_FLOOR", 2.0),
            ("M_ROUND", 3.0),
            ("M_SQRT", 2.5),
            ("M_EXP", 2.5_f64.exp()),
            ("M_LN", 2.5_f64.ln()),
            ("M_LOG10", 2.0),
            ("M_LOG2", 10_f64.log2()),
            ("M_POWER", 49.0),
            ("M_GREATEST", 0.0),
            ("M_LEAST", -7.0),
            ("M_CBRT", 2.5),
            ("M_SIN", 2.5_f64.sin()),
            ("M_COS", 2.5_f64.cos()),
            ("M_ATAN2", 2.5_f64.atan2(1.0)),
            ("M_DEGREES", 180.0),
            ("M_RADIANS", PI),
        ],
    );
    assert_numbers(
        b,
        &[
            ("M_ABS", 4.0),
            ("M_CEIL", -2.0),
            ("M_FLOOR", -3.0),
            ("M_ROUND", -3.0),
            ("M_SQRT", 2.5),
            ("M_EXP", (-2.5_f64).exp()),
            ("M_LN", 2.5_f64.ln()),
            ("M_LOG10", 2.0),
            ("M_LOG2", 10_f64.log2()),
            ("M_POWER", 16.0),
            ("M_GREATEST", 4.0),
            ("M_LEAST", 0.0),
            ("M_CBRT", -2.5),
            ("M_SIN", (-2.5_f64).sin()),
            ("M_COS", (-2.5_f64).cos()),
            ("M_ATAN2", (-2.5_f64).atan2(1.0)),
            ("M_DEGREES", 180.0),
            ("M_RADIANS", -PI),
        ],
    );
    // ABS of an INT is an integer; ROUND of a DOUBLE stays a DOUBLE.
    for value in [a, b] {
        assert!(value["M_ABS"].is_i64(), "{value}");
        assert!(value["M_ROUND"].is_f64(), "{value}");
    }

    assert_eq!(
        values_by_key(&brokers, "OUT_CONDITIONALS").await?,
        [
            (
                "a".to_owned(),
                json!({"X_COALESCE": "x", "X_IFNULL": "x", "X_NULLIF": -7, "X_CONCAT": "x!",
                       "X_CASE": "neg", "X_LIKE": true, "X_BETWEEN": true, "X_IN": false,
                       "X_TEXT": "-7", "X_DOUBLE": -7.0, "X_BIGINT": -7})
            ),
            (
                "b".to_owned(),
                json!({"X_COALESCE": "none", "X_IFNULL": "none", "X_NULLIF": null,
                       "X_CONCAT": "!", "X_CASE": "pos", "X_LIKE": false,
                       "X_BETWEEN": false, "X_IN": true,
                       "X_TEXT": "4", "X_DOUBLE": 4.0, "X_BIGINT": 4})
            ),
        ]
    );

    // A TIMESTAMP is written as ISO text; text that is not JSON extracts
    // as NULL.
    assert_eq!(
        values_by_key(&brokers, "OUT_TIMES").await?,
        [
            (
                "a".to_owned(),
                json!({"T_TEXT": "2020-09-13 12:26:40.123", "T_DAY": "2020-09-13",
                       "T_PARSED": 1_600_000_000_000_i64, "T_UNIX": "2020-09-13T12:26:40",
                       "J_NAME": "ann", "J_TAG": "q"})
            ),
            (
                "b".to_owned(),
                json!({"T_TEXT": "1970-01-01 00:00:00.000", "T_DAY": "1970-01-01",
                       "T_PARSED": 0, "T_UNIX": "1970-01-01T00:00:00",
                       "J_NAME": null, "J_TAG": null})
            ),
        ]
    );

    // Arrays and maps are written as JSON; map keys keep their case.
    // ARRAY_DISTINCT keeps the order of first occurrence.
    assert_eq!(
        values_by_key(&brokers, "OUT_COLLECTIONS").await?,
        [
            (
                "a".to_owned(),
                json!({"C_ARRAY": [-7, 0], "C_LENGTH": 4, "C_CONTAINS": true,
                       "C_DISTINCT": [3, 1, 2], "C_JOIN": "3-1-3-2", "C_MAX": 3, "C_MIN": 1,
                       "C_SORT": [1, 2, 3, 3], "C_REMOVE": [1, 3, 2],
                       "C_CONCAT": [3, 1, 3, 2, -7], "C_UNION": [-7, 1, 2, 3],
                       "C_EXCEPT": [1, 2], "C_INTERSECT": [1], "C_SERIES": [0, 2, 4, 6],
                       "C_MAP": {"n": -7, "two": 2}, "C_MAP_KEYS": ["k1", "k2"],
                       "C_MAP_VALUES": [1, 2], "C_AS_MAP": {"x": -7, "y": 3}})
            ),
            (
                "b".to_owned(),
                json!({"C_ARRAY": [4, 0], "C_LENGTH": 1, "C_CONTAINS": false,
                       "C_DISTINCT": [5], "C_JOIN": "5", "C_MAX": 5, "C_MIN": 5,
                       "C_SORT": [5], "C_REMOVE": [5], "C_CONCAT": [5, 4], "C_UNION": [4, 5],
                       "C_EXCEPT": [], "C_INTERSECT": [5], "C_SERIES": [0, 2, 4],
                       "C_MAP": {"n": 4, "two": 2}, "C_MAP_KEYS": ["z"],
                       "C_MAP_VALUES": [26], "C_AS_MAP": {"x": 4, "y": 5}})
            ),
        ]
    );

    // The same array values in one-off queries over the records read.
    assert_eq!(
        text_rows(&client, "SELECT SPLIT(s, ',') FROM src WHERE id = 'b'").await?,
        [r#"{a,b,"",c}"#]
    );
    assert_eq!(
        sorted_text_rows(
            &client,
            "SELECT id, ARRAY_DISTINCT(tags), ARRAY_SORT(tags), ARRAY_REMOVE(tags, 3), \
               ARRAY_CONCAT(tags, ARRAY[n]), ARRAY_LENGTH(tags), MAP_KEYS(attrs), \
               GENERATE_SERIES(0, ABS(n), 2) FROM src",
        )
        .await?,
        [
            "a|{3,1,2}|{1,2,3,3}|{1,3,2}|{3,1,3,2,-7}|4|{k1,k2}|{0,2,4,6}",
            "b|{5}|{5}|{5}|{5,4}|1|{z}|{0,2,4}",
        ]
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aggregates_write_a_table() -> Result<()> {
    let (broker, _server, client) = server_with_broker().await?;
    let brokers = broker.brokers();
    // AVG, MIN, MAX; LATEST_BY_OFFSET and EARLIEST_BY_OFFSET (NULLs
    // skipped); COLLECT_LIST (offset order), COLLECT_SET (distinct,
    // sorted); TOPK and TOPKDISTINCT (greatest first, NULLs skipped);
    // HISTOGRAM (values counted as text, NULLs left out).
    client
        .batch_execute(
            "CREATE STREAM plays (id VARCHAR KEY, player VARCHAR, score INT, \
               difficulty VARCHAR) \
               WITH (kafka_topic='plays', value_format='JSON', partitions=1);
             CREATE TABLE per_player AS \
               SELECT player, count(*) AS n, AVG(score) AS avg_score, \
                 MIN(score) AS min_score, MAX(score) AS max_score, \
                 LATEST_BY_OFFSET(score) AS latest, EARLIEST_BY_OFFSET(score) AS earliest, \
                 COLLECT_LIST(difficulty) AS levels, COLLECT_SET(difficulty) AS level_set, \
                 TOPK(score, 2) AS top2, TOPKDISTINCT(score, 2) AS top2_distinct, \
                 HISTOGRAM(difficulty) AS level_counts, HISTOGRAM(score) AS score_counts \
               FROM plays GROUP BY player;",
        )
        .await?;
    let play = |id: &str, player: &str, score: Option<i32>, difficulty: &str| {
        json_record(
            id,
            json!({"player": player, "score": score, "difficulty": difficulty}),
        )
    };
    produce(
        &brokers,
        "plays",
        Some(0),
        &[
            play("p1", "ann", Some(10), "easy"),
            play("p2", "ann", Some(30), "hard"),
            play("p3", "ann", Some(30), "easy"),
            play("p4", "ann", Some(20), "hard"),
            play("p5", "ann", None, "easy"),
            play("p6", "bob", None, "easy"),
            play("p7", "bob", Some(5), "hard"),
            play("p8", "bob", Some(7), "easy"),
        ],
    )
    .await?;
    client.batch_execute("FLUSH").await?;
    assert_eq!(
        text_rows(&client, "SELECT count(*) FROM eddy_dead_letters").await?,
        ["0"]
    );

    // The changelog's last record per player is its current row; arrays
    // and maps are written as JSON.
    assert_eq!(
        latest_by_key(&brokers, "PER_PLAYER").await?,
        BTreeMap::from([
            (
                "ann".to_owned(),
                json!({"N": 5, "AVG_SCORE": 22.5, "MIN_SCORE": 10, "MAX_SCORE": 30,
                       "LATEST": 20, "EARLIEST": 10,
                       "LEVELS": ["easy", "hard", "easy", "hard", "easy"],
                       "LEVEL_SET": ["easy", "hard"], "TOP2": [30, 30],
                       "TOP2_DISTINCT": [30, 20], "LEVEL_COUNTS": {"easy": 3, "hard": 2},
                       "SCORE_COUNTS": {"10": 1, "20": 1, "30": 2}})
            ),
            (
                "bob".to_owned(),
                json!({"N": 3, "AVG_SCORE": 6.0, "MIN_SCORE": 5, "MAX_SCORE": 7,
                       "LATEST": 7, "EARLIEST": 5, "LEVELS": ["easy", "hard", "easy"],
                       "LEVEL_SET": ["easy", "hard"], "TOP2": [7, 5], "TOP2_DISTINCT": [7, 5],
                       "LEVEL_COUNTS": {"easy": 2, "hard": 1},
                       "SCORE_COUNTS": {"5": 1, "7": 1}})
            ),
        ])
    );

    // The table over its topic, and the same aggregates in a one-off
    // query over the records read.
    let expected = [
        r#"ann|5|10|30|20|10|{easy,hard,easy,hard,easy}|{easy,hard}|{30,30}|{30,20}|{"easy": 3, "hard": 2}|{"10": 1, "20": 1, "30": 2}"#,
        r#"bob|3|5|7|7|5|{easy,hard,easy}|{easy,hard}|{7,5}|{7,5}|{"easy": 2, "hard": 1}|{"5": 1, "7": 1}"#,
    ];
    assert_eq!(
        sorted_text_rows(
            &client,
            "SELECT player, n, min_score, max_score, latest, earliest, levels, level_set, \
               top2, top2_distinct, level_counts, score_counts FROM per_player",
        )
        .await?,
        expected
    );
    assert_eq!(
        sorted_text_rows(
            &client,
            "SELECT player, count(*), MIN(score), MAX(score), LATEST_BY_OFFSET(score), \
               EARLIEST_BY_OFFSET(score), COLLECT_LIST(difficulty), COLLECT_SET(difficulty), \
               TOPK(score, 2), TOPKDISTINCT(score, 2), HISTOGRAM(difficulty), \
               HISTOGRAM(score) FROM plays GROUP BY player",
        )
        .await?,
        expected
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_forms_fail_with_their_sqlstate() -> Result<()> {
    let (broker, _server, client) = server_with_broker().await?;
    client
        .batch_execute(
            "CREATE STREAM src (id VARCHAR KEY, s VARCHAR, n INT, ms BIGINT, tags ARRAY<INT>) \
             WITH (kafka_topic='src', value_format='JSON', partitions=1)",
        )
        .await?;
    produce(
        &broker.brokers(),
        "src",
        Some(0),
        &[
            json_record(
                "a",
                json!({"s": "13/09/2020", "n": 1, "ms": 0, "tags": [1]}),
            ),
            json_record("b", json!({"s": "x", "n": 3, "ms": 0, "tags": [2]})),
        ],
    )
    .await?;
    client.batch_execute("FLUSH").await?;

    // Forms a persistent query over the stream cannot take.
    for (sql, code, words) in [
        // A string plus a number.
        (
            "CREATE STREAM bad AS SELECT id, s + n AS x FROM src",
            "42883",
            "Cannot coerce arithmetic expression",
        ),
        // INSTR's position argument.
        (
            "CREATE STREAM bad AS SELECT id, INSTR(s, 'a', 2) AS x FROM src",
            "42883",
            "No function matches",
        ),
        // ARRAY_JOIN without a delimiter.
        (
            "CREATE STREAM bad AS SELECT id, ARRAY_JOIN(tags) AS x FROM src",
            "42883",
            "No function matches",
        ),
        // CHR of a string.
        (
            "CREATE STREAM bad AS SELECT id, CHR(s) AS x FROM src",
            "42883",
            "No function matches",
        ),
        // UNIX_TIMESTAMP, UUID and RANDOM, whose results change over time.
        (
            "CREATE STREAM bad AS SELECT id, UNIX_TIMESTAMP() AS x FROM src",
            "0A000",
            "changes over time",
        ),
        (
            "CREATE STREAM bad AS SELECT id, UUID() AS x FROM src",
            "0A000",
            "changes over time",
        ),
        (
            "CREATE STREAM bad AS SELECT id, RANDOM() AS x FROM src",
            "0A000",
            "changes over time",
        ),
        // STDDEV_SAMP runs in one-off queries only.
        (
            "CREATE TABLE bad AS SELECT s, STDDEV_SAMP(n) AS x FROM src GROUP BY s",
            "0A000",
            "aggregate stddev",
        ),
        // TOPK's third argument.
        (
            "CREATE TABLE bad AS SELECT s, TOPK(n, 1, 2) AS x FROM src GROUP BY s",
            "0A000",
            "more than two arguments",
        ),
        // LATEST_BY_OFFSET's ignoreNulls argument.
        (
            "CREATE TABLE bad AS SELECT s, LATEST_BY_OFFSET(n, false) AS x FROM src GROUP BY s",
            "0A000",
            "more than one argument",
        ),
    ] {
        let (got, message) = sqlstate(&client, sql).await?;
        assert_eq!(got, code, "{sql}: {message}");
        assert!(message.contains(words), "{sql}: {message}");
    }
    let streams = text_rows(&client, "SHOW STREAMS").await?;
    assert!(
        !streams.iter().any(|s| s.starts_with("bad|")),
        "{streams:?}"
    );

    // Values a function refuses, in one-off queries over the records read.
    for (sql, code, words) in [
        (
            "SELECT TIMESTAMPTOSTRING(ms, 'yyyy', 'Europe/Paris') FROM src",
            "22023",
            "time zone 'Europe/Paris' is not supported",
        ),
        (
            "SELECT STRINGTOTIMESTAMP(s, 'yyyy-MM-dd') FROM src",
            "22007",
            "does not match pattern 'yyyy-MM-dd'",
        ),
    ] {
        let (got, message) = sqlstate(&client, sql).await?;
        assert_eq!(got, code, "{sql}: {message}");
        assert!(message.contains(words), "{sql}: {message}");
    }
    // UNIX_TIMESTAMP and STDDEV_SAMP run in one-off queries (the sample
    // standard deviation of 1 and 3 is the square root of 2).
    assert_eq!(
        text_rows(&client, "SELECT UNIX_TIMESTAMP() > ms FROM src").await?,
        ["t", "t"]
    );
    assert_eq!(
        text_rows(
            &client,
            "SELECT CAST(STDDEV_SAMP(n) * 1000 AS BIGINT) FROM src"
        )
        .await?,
        ["1414"]
    );
    Ok(())
}
