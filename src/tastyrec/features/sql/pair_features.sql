-- Per customer x item features looked up in the customer's history lists (customer_history view).
-- The one definition used to build training sets and to serve: they cannot drift apart.
SELECT * EXCLUDE (history_item_orders, history_item_days, history_brand_shares),
       coalesce(history_item_orders[list_position(history_items, menu_item_name)], 0)::DOUBLE
           AS item_purchase_count,
       coalesce(history_item_days[list_position(history_items, menu_item_name)], $never)::DOUBLE
           AS days_since_item_purchase,
       coalesce(history_brand_shares[list_position(history_brands, truck_brand_name)], 0)::DOUBLE
           AS brand_spend_share
FROM frame;
