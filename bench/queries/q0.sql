-- q0: pass through
-- Every bid passes through unchanged; measures the cost of reading the source and maintaining a view.
-- status: runs
SELECT auction, bidder, price, date_time FROM bid
