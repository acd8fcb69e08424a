-- The seed's menu item features for non-beverage items. The menu does not change over time, so
-- every item has one row stamped at the start of time.
SELECT TIMESTAMP '2000-01-01' AS event_timestamp, menu_item_name, menu_type, truck_brand_name,
       item_category, item_subcategory, sale_price_usd::DOUBLE AS sale_price_usd
FROM raw_pos.menu
WHERE item_category <> 'Beverage'
QUALIFY row_number() OVER (PARTITION BY menu_item_name ORDER BY menu_item_id) = 1
ORDER BY menu_item_name;
