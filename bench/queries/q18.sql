-- q18: find last bid
-- The last bid of each bidder on each auction (a per-group top-1, deduplication).
-- status: runs
-- adapted: the derived table gets an alias (B); the outer columns are Flink's (with extra), RisingWave's benchmark text leaves extra out.
SELECT auction, bidder, price, channel, url, date_time, extra
FROM (
    SELECT *,
        ROW_NUMBER() OVER (
            PARTITION BY bidder, auction
            ORDER BY date_time DESC
        ) AS rank_number
    FROM bid
) B
WHERE rank_number <= 1
