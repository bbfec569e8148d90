-- q13: bounded side input join
-- Each bid enriched with a value looked up in a bounded side table keyed by auction mod 10000 (stream enrichment).
-- status: runs
-- adapted: the standard is a processing-time lookup join (side_input FOR SYSTEM_TIME AS OF PROCTIME()); Eddy has no lookup join yet, so this is a regular, fully incremental join (a change to side_input also updates past bids). mod(B.auction, 10000) is written B.auction % 10000.
-- note: the harness creates side_input(key BIGINT PRIMARY KEY, value TEXT) with keys 0..9999.
SELECT
    B.auction,
    B.bidder,
    B.price,
    B.date_time,
    S.value
FROM bid B
JOIN side_input S ON B.auction % 10000 = S.key
