-- q17: auction statistics report
-- Per auction and day: the number of bids in three price ranks and the min, max, average and sum of prices.
-- status: runs
-- adapted: to_char(date_time, 'YYYY-MM-DD') becomes to_char(date_time, '%Y-%m-%d'), because DataFusion's to_char takes chrono format strings.
SELECT
    auction,
    to_char(date_time, '%Y-%m-%d') AS "day",
    count(*) AS total_bids,
    count(*) FILTER (WHERE price < 10000) AS rank1_bids,
    count(*) FILTER (WHERE price >= 10000 AND price < 1000000) AS rank2_bids,
    count(*) FILTER (WHERE price >= 1000000) AS rank3_bids,
    min(price) AS min_price,
    max(price) AS max_price,
    avg(price) AS avg_price,
    sum(price) AS sum_price
FROM bid
GROUP BY auction, to_char(date_time, '%Y-%m-%d')
