-- q3: local item suggestion
-- Who is selling in OR, ID or CA in category 10, and for what auction ids (a join of auctions with their sellers).
-- status: runs
-- adapted: states are compared in upper case ('OR', 'ID', 'CA'), as in Flink's suite; RisingWave's text uses lower case for its own generator, but Eddy's generator emits upper-case states as Beam's and Flink's do, so lower case would match nothing.
SELECT
    P.name, P.city, P.state, A.id
FROM
    auction AS A INNER JOIN person AS P ON A.seller = P.id
WHERE
    A.category = 10 AND (P.state = 'OR' OR P.state = 'ID' OR P.state = 'CA')
