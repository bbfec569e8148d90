-- q19: auction top-10 price
-- The 10 highest-priced bids of each auction, with their rank (a per-group top-N).
-- status: runs
-- adapted: the derived table gets an alias (B), and date_time is added to the ORDER BY to break ties between equal prices, so the ranks (and which bids make the top 10) are deterministic and the view can be compared with the same query run as a batch; the columns are listed, as * would include the stream's pseudo-columns.
SELECT auction, bidder, price, channel, url, date_time, extra, rank_number
FROM (
    SELECT auction, bidder, price, channel, url, date_time, extra,
        ROW_NUMBER() OVER (
            PARTITION BY auction
            ORDER BY price DESC, date_time
        ) AS rank_number
    FROM bid
) B
WHERE rank_number <= 10
