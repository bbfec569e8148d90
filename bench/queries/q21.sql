-- q21: add channel id
-- Each bid from a known channel or with a channel_id in its URL, with the channel's id (CASE, lower and a regular expression).
-- status: runs
-- adapted: RisingWave's (regexp_match(url, ...))[2] (its form of Flink's REGEXP_EXTRACT(url, ..., 2)) is written without the parentheses, regexp_match(url, '(&|^)channel_id=([^&]*)')[2]: regexp_match returns the list of groups, indexed from 1.
SELECT
    auction,
    bidder,
    price,
    channel,
    CASE
        WHEN lower(channel) = 'apple' THEN '0'
        WHEN lower(channel) = 'google' THEN '1'
        WHEN lower(channel) = 'facebook' THEN '2'
        WHEN lower(channel) = 'baidu' THEN '3'
        ELSE regexp_match(url, '(&|^)channel_id=([^&]*)')[2]
    END AS channel_id
FROM bid
WHERE
    regexp_match(url, '(&|^)channel_id=([^&]*)')[2] IS NOT NULL
    OR lower(channel) IN ('apple', 'google', 'facebook', 'baidu')
