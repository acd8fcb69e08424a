-- Loyalty order lines with their item and brand, the input of the history features.
CREATE OR REPLACE TEMP TABLE loyalty_lines AS
SELECT oh.customer_id, oh.order_id, oh.order_ts, m.menu_item_name, m.truck_brand_name,
       m.item_category <> 'Beverage' AS is_food, od.price::DOUBLE AS price
FROM raw_pos.order_header oh
JOIN raw_pos.order_detail od ON od.order_id = oh.order_id
JOIN raw_pos.menu m ON m.menu_item_id = od.menu_item_id
WHERE oh.customer_id IS NOT NULL;
