-- q22: get URL directories
-- Each bid with the first three directories of its URL (string splitting).
-- status: runs
-- note: RisingWave's text as is; it writes Flink's SPLIT_INDEX(url, '/', 3..5) (0-based) as split_part(url, '/', 4..6) (1-based).
SELECT
    auction,
    bidder,
    price,
    channel,
    split_part(url, '/', 4) AS dir1,
    split_part(url, '/', 5) AS dir2,
    split_part(url, '/', 6) AS dir3
FROM bid
