-- Candidate items per city: the non-beverage items of every brand with a truck in the city.
-- (A loyalty customer buys from trucks in their own city.) Used by training and serving.
SELECT DISTINCT t.primary_city AS city, m.menu_item_name, m.truck_brand_name
FROM raw_pos.truck t
JOIN raw_pos.menu m ON m.menu_type_id = t.menu_type_id AND m.item_category <> 'Beverage'
ORDER BY city, menu_item_name;
