-- q2: selection
-- The bids on a few specific auctions, with their price (a filter).
-- status: runs
SELECT auction, price
FROM bid
WHERE auction = 1007 OR auction = 1020 OR auction = 2001 OR auction = 2019 OR auction = 2087
