-- q11: user sessions
-- How many bids each user made in each session of activity (session windows with a 10-second gap).
-- status: waits for windows
-- adapted: RisingWave's suite has no q11, so this is Flink's text (SESSION group window) with RisingWave's column name date_time for dateTime.
SELECT
    B.bidder,
    count(*) AS bid_count,
    SESSION_START(B.date_time, INTERVAL '10' SECOND) AS starttime,
    SESSION_END(B.date_time, INTERVAL '10' SECOND) AS endtime
FROM bid B
GROUP BY B.bidder, SESSION(B.date_time, INTERVAL '10' SECOND)
