-- q10: log to file system
-- Every bid with its day and minute, the partition columns a file sink would write it under.
-- status: runs
-- adapted: TO_CHAR(date_time, 'YYYY-MM-DD') and TO_CHAR(date_time, 'HH:MI') become to_char(date_time, '%Y-%m-%d') and to_char(date_time, '%H:%M'), because DataFusion's to_char takes chrono format strings (and the standard means the 24-hour hour, as Flink's 'HH:mm').
SELECT
    auction,
    bidder,
    price,
    date_time,
    to_char(date_time, '%Y-%m-%d') AS date,
    to_char(date_time, '%H:%M') AS time
FROM bid
