-- q1: currency conversion
-- Convert each bid's price from dollars to euros (a projection with arithmetic).
-- status: runs
SELECT
    auction,
    bidder,
    0.908 * price AS price,
    date_time
FROM bid
