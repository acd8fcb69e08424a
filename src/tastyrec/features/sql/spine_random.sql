-- The seed's split: loyalty_purchased_items (every customer x non-beverage item, purchased ever)
-- split at random into train / validation / test (80 / 10 / 10, by a seeded hash), with features
-- as of the end of the data. Kept to compare with the seed; its features see the label period.
SELECT customer_id, menu_item_name, $as_of::TIMESTAMP AS event_timestamp, purchased::DOUBLE AS label,
       CASE WHEN h < 80 THEN 'train' WHEN h < 90 THEN 'val' ELSE 'test' END AS split
FROM (SELECT *, hash(customer_id, menu_item_name, $seed) % 100 AS h FROM analytics.loyalty_purchased_items)
ORDER BY customer_id, menu_item_name;
