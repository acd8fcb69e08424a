-- A customer's history before the snapshot, as aligned lists (one row per customer, so serving
-- reads one online row per customer): the non-beverage items bought with how many orders held
-- each, days since the last one, those orders weighted by recency (exp(-age / $window_days)) and
-- the mean days between them; and the brands with their share of the customer's spend.
-- The per-pair features (item_purchase_count, ...) are looked up in these lists by
-- tastyrec.features.training.assemble, for training and serving alike. Run for one range of
-- customer ids at a time (features.build.customer_parts): the lists are the biggest intermediate.
WITH loyalty_lines AS (
    -- loyalty order lines with their item and brand
    SELECT oh.customer_id, oh.order_id, oh.order_ts, m.menu_item_name, m.truck_brand_name,
           m.item_category <> 'Beverage' AS is_food, od.price::DOUBLE AS price
    FROM raw_pos.order_header oh
    JOIN raw_pos.order_detail od ON od.order_id = oh.order_id
    JOIN raw_pos.menu m ON m.menu_item_id = od.menu_item_id
    WHERE oh.customer_id >= $first_customer AND oh.customer_id < $end_customer  -- one part of the customers
),
item_orders AS (
    -- one row per order that held the item, with its age in days at the snapshot
    SELECT DISTINCT s.ts, l.customer_id, l.order_id, l.menu_item_name,
           date_diff('day', l.order_ts, s.ts)::DOUBLE AS age
    FROM snapshots s JOIN loyalty_lines l ON l.order_ts < s.ts AND l.is_food
),
items AS (
    SELECT ts, customer_id, menu_item_name,
           count(*)::DOUBLE AS orders,
           min(age) AS days,
           sum(exp(-age / $window_days)) AS recent,
           CASE WHEN count(*) > 1 THEN (max(age) - min(age)) / (count(*) - 1) END AS interval
    FROM item_orders
    GROUP BY ts, customer_id, menu_item_name
),
brands AS (
    SELECT s.ts, l.customer_id, l.truck_brand_name, sum(l.price) AS spend
    FROM snapshots s JOIN loyalty_lines l ON l.order_ts < s.ts
    GROUP BY s.ts, l.customer_id, l.truck_brand_name
),
item_lists AS (
    SELECT ts, customer_id,
           list(menu_item_name ORDER BY menu_item_name) AS history_items,
           list(orders ORDER BY menu_item_name) AS history_item_orders,
           list(days ORDER BY menu_item_name) AS history_item_days,
           list(recent ORDER BY menu_item_name) AS history_item_recent,
           list(coalesce(interval, $never_days) ORDER BY menu_item_name) AS history_item_interval
    FROM items GROUP BY ts, customer_id
),
brand_lists AS (
    SELECT ts, customer_id,
           list(truck_brand_name ORDER BY truck_brand_name) AS history_brands,
           list(share ORDER BY truck_brand_name) AS history_brand_shares
    FROM (SELECT *, (spend / sum(spend) OVER (PARTITION BY ts, customer_id))::DOUBLE AS share FROM brands)
    GROUP BY ts, customer_id
)
SELECT b.ts AS event_timestamp, b.customer_id,
       coalesce(i.history_items, []::VARCHAR[]) AS history_items,
       coalesce(i.history_item_orders, []::DOUBLE[]) AS history_item_orders,
       coalesce(i.history_item_days, []::DOUBLE[]) AS history_item_days,
       coalesce(i.history_item_recent, []::DOUBLE[]) AS history_item_recent,
       coalesce(i.history_item_interval, []::DOUBLE[]) AS history_item_interval,
       b.history_brands, b.history_brand_shares
FROM brand_lists b LEFT JOIN item_lists i USING (ts, customer_id)
ORDER BY b.ts, b.customer_id;
