-- The seed's customer features plus favourite brand and children, one row per customer per
-- snapshot: age is the age in whole years on the snapshot day.
SELECT s.ts AS event_timestamp, c.customer_id, c.city, c.country, c.gender, c.marital_status,
       c.favourite_brand, c.children_count,
       (year(s.ts) - year(c.birthday_date)
        - CASE WHEN month(s.ts) * 100 + day(s.ts) < month(c.birthday_date) * 100 + day(c.birthday_date)
               THEN 1 ELSE 0 END)::DOUBLE AS age
FROM raw_customer.customer_loyalty c CROSS JOIN snapshots s
ORDER BY s.ts, c.customer_id;
