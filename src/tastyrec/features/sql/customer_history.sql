-- A customer's history before the snapshot, as aligned lists (one row per customer, so serving
-- reads one online row per customer): the non-beverage items bought with how many orders held
-- each, days since the last one, those orders weighted by recency (exp(-age / $window_days)), the
-- mean days between them, and the basket-weighted shares TIFU-KNN's own vector is made of: the
-- share of the customer's food orders (baskets) that held the item, with each basket weighted
-- 1, 0.9^b and 0.5^b (b = baskets placed after it: 0 for the last); and the brands with their
-- share of the customer's spend.
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
baskets AS (
    -- the customer's food orders before the snapshot, b = how many came after (0 for the last)
    SELECT ts, customer_id, order_id,
           (row_number() OVER (PARTITION BY ts, customer_id ORDER BY order_ts DESC, order_id DESC) - 1)::DOUBLE AS b
    FROM (SELECT DISTINCT s.ts, l.customer_id, l.order_id, l.order_ts
          FROM snapshots s JOIN loyalty_lines l ON l.order_ts < s.ts AND l.is_food)
),
basket_totals AS (
    SELECT ts, customer_id, count(*)::DOUBLE AS n, sum(pow(0.9, b)) AS w9, sum(pow(0.5, b)) AS w5
    FROM baskets GROUP BY ts, customer_id
),
item_orders AS (
    -- one row per order that held the item, with its age in days at the snapshot and its b
    SELECT DISTINCT s.ts, l.customer_id, l.order_id, l.menu_item_name,
           date_diff('day', l.order_ts, s.ts)::DOUBLE AS age
    FROM snapshots s JOIN loyalty_lines l ON l.order_ts < s.ts AND l.is_food
),
items AS (
    SELECT o.ts, o.customer_id, o.menu_item_name,
           count(*)::DOUBLE AS orders,
           min(age) AS days,
           sum(exp(-age / $window_days)) AS recent,
           CASE WHEN count(*) > 1 THEN (max(age) - min(age)) / (count(*) - 1) END AS interval,
           count(*) / any_value(t.n) AS share,
           sum(pow(0.9, k.b)) / any_value(t.w9) AS decay,
           sum(pow(0.5, k.b)) / any_value(t.w5) AS last
    FROM item_orders o
    JOIN baskets k USING (ts, customer_id, order_id)
    JOIN basket_totals t USING (ts, customer_id)
    GROUP BY o.ts, o.customer_id, o.menu_item_name
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
           list(coalesce(interval, $never_days) ORDER BY menu_item_name) AS history_item_interval,
           list(share ORDER BY menu_item_name) AS history_item_share,
           list(decay ORDER BY menu_item_name) AS history_item_decay,
           list(last ORDER BY menu_item_name) AS history_item_last
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
       coalesce(i.history_item_share, []::DOUBLE[]) AS history_item_share,
       coalesce(i.history_item_decay, []::DOUBLE[]) AS history_item_decay,
       coalesce(i.history_item_last, []::DOUBLE[]) AS history_item_last,
       b.history_brands, b.history_brand_shares
FROM brand_lists b LEFT JOIN item_lists i USING (ts, customer_id)
ORDER BY b.ts, b.customer_id;
