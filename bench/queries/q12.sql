-- q12: processing time windows
-- How many bids each user makes in each 10-second tumbling window of processing time.
-- status: waits for windows
-- note: RisingWave's text as is; p_time is the processing-time column RisingWave's DDL adds to bid (p_time AS PROCTIME()), which Eddy's bid does not have yet, so this needs processing time as well as TUMBLE.
SELECT
    bidder,
    count(*) AS bid_count,
    window_start,
    window_end
FROM TUMBLE(bid, p_time, INTERVAL '10' SECOND)
GROUP BY bidder, window_start, window_end
