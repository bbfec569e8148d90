-- q11: user sessions
-- How many bids each user made in each session of activity (session windows with a 10-second gap).
-- status: runs
-- adapted: RisingWave's suite has no q11. Flink's text groups by SESSION(B.dateTime, INTERVAL '10' SECOND); Eddy writes that window as the SESSION table function. Flink's SESSION_END is the last bid's time plus the gap, and Eddy's window_end is the last bid's time (ksqlDB's WINDOWEND), so endtime adds the gap.
SELECT
    B.bidder,
    count(*) AS bid_count,
    window_start AS starttime,
    window_end + INTERVAL '10' SECOND AS endtime
FROM SESSION(bid, date_time, INTERVAL '10' SECOND) AS B
GROUP BY B.bidder, window_start, window_end
