-- Time split: for each cutoff T, every customer signed up before T x their candidate items,
-- label 1 if the customer bought the item in [T, T + window).
-- Reads the temp view `candidates` (candidates.sql; run with views=["candidates.sql"]).
WITH cutoffs AS (SELECT unnest($cutoffs::TIMESTAMP[]) AS ts, unnest($splits::VARCHAR[]) AS split),
bought AS (
    SELECT DISTINCT c.ts, oh.customer_id, m.menu_item_name
    FROM cutoffs c
    JOIN raw_pos.order_header oh
      ON oh.order_ts >= c.ts AND oh.order_ts < c.ts + INTERVAL ($window_days) DAY
    JOIN raw_pos.order_detail od ON od.order_id = oh.order_id
    JOIN raw_pos.menu m ON m.menu_item_id = od.menu_item_id
    WHERE oh.customer_id IS NOT NULL AND m.item_category <> 'Beverage'
)
SELECT cl.customer_id, k.menu_item_name, c.ts AS event_timestamp,
       (b.customer_id IS NOT NULL)::DOUBLE AS label, c.split
FROM cutoffs c
JOIN raw_customer.customer_loyalty cl ON cl.sign_up_date < c.ts
JOIN candidates k ON k.city = cl.city
LEFT JOIN bought b ON b.ts = c.ts AND b.customer_id = cl.customer_id AND b.menu_item_name = k.menu_item_name
ORDER BY c.ts, cl.customer_id, k.menu_item_name;
