-- q14: calculation
-- Bids in a price band, converted to euros, classified by time of day, with a count of 'c' characters in extra (scalar expressions and a filter).
-- status: runs
-- adapted: the count_char(extra, 'c') UDF is written length(extra) - length(replace(extra, 'c', '')), since Eddy has no user-defined functions.
SELECT
    auction,
    bidder,
    0.908 * price AS price,
    CASE
        WHEN
            extract(hour from date_time) >= 8 AND
            extract(hour from date_time) <= 18
        THEN 'dayTime'
        WHEN
            extract(hour from date_time) <= 6 OR
            extract(hour from date_time) >= 20
        THEN 'nightTime'
        ELSE 'otherTime'
    END AS bidTimeType,
    date_time,
    length(extra) - length(replace(extra, 'c', '')) AS c_counts
FROM bid
WHERE 0.908 * price > 1000000 AND 0.908 * price < 50000000
