-- q6: average selling price by seller
-- The average selling price per seller over their last 10 closed auctions (winning bids as in q4, then a sliding average over rows).
-- status: refused: window function AVG() OVER (... ROWS BETWEEN 10 PRECEDING AND CURRENT ROW); only ROW_NUMBER() bounded by an outer filter is maintained
-- adapted: Flink's text nests WHERE rownum <= 1 inside the subquery that computes rownum, which does not plan; here the winning bid per auction is picked by an outer WHERE on the ROW_NUMBER() subquery and the AVG() OVER runs on the result (WHERE is applied before the window function). RisingWave's suite has no standard q6 (only its q6_group_top1 variant).
SELECT
    Q.seller,
    AVG(Q.final) OVER (
        PARTITION BY Q.seller
        ORDER BY Q.date_time
        ROWS BETWEEN 10 PRECEDING AND CURRENT ROW
    ) AS avg_price
FROM (
    SELECT
        A.id,
        A.seller,
        B.price AS final,
        B.date_time,
        ROW_NUMBER() OVER (PARTITION BY A.id, A.seller ORDER BY B.price DESC) AS rownum
    FROM
        auction A,
        bid B
    WHERE
        A.id = B.auction AND
        B.date_time BETWEEN A.date_time AND A.expires
) Q
WHERE Q.rownum <= 1
