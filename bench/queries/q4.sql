-- q4: average price for a category
-- The average of the winning bid prices (highest bid while the auction is open) of all auctions in each category.
-- status: runs
SELECT
    Q.category,
    AVG(Q.final) AS avg
FROM (
    SELECT
        MAX(B.price) AS final, A.category
    FROM
        auction A,
        bid B
    WHERE
        A.id = B.auction AND
        B.date_time BETWEEN A.date_time AND A.expires
    GROUP BY
        A.id, A.category
) Q
GROUP BY
    Q.category
