-- q12: processing time windows
-- How many bids each user makes in each 10-second tumbling window of processing time.
-- status: runs
-- note: RisingWave's text as is. The harness declares bid with RisingWave's processing-time column (p_time AS PROCTIME()), filled with the time each record is ingested. Processing times exist only in the server's stored stream, so the batch reference runs this query over that stream (DataFusion through the server's one-off path) instead of over generated events.
SELECT
    bidder,
    count(*) AS bid_count,
    window_start,
    window_end
FROM TUMBLE(bid, p_time, INTERVAL '10' SECOND)
GROUP BY bidder, window_start, window_end
