-- Harmonized and analytics views, as in the seed's setup.sql.

CREATE OR REPLACE VIEW harmonized.orders_v AS
SELECT
    oh.order_id,
    oh.truck_id,
    oh.order_ts,
    od.order_detail_id,
    od.line_number,
    m.truck_brand_name,
    m.menu_type,
    t.primary_city,
    t.region,
    t.country,
    t.franchise_flag,
    t.franchise_id,
    f.first_name AS franchisee_first_name,
    f.last_name AS franchisee_last_name,
    l.location_id,
    cl.customer_id,
    cl.first_name,
    cl.last_name,
    cl.e_mail,
    cl.phone_number,
    cl.children_count,
    cl.gender,
    cl.marital_status,
    od.menu_item_id,
    m.menu_item_name,
    od.quantity,
    od.unit_price,
    od.price,
    oh.order_amount,
    oh.order_tax_amount,
    oh.order_discount_amount,
    oh.order_total
FROM raw_pos.order_detail od
JOIN raw_pos.order_header oh ON od.order_id = oh.order_id
JOIN raw_pos.truck t ON oh.truck_id = t.truck_id
JOIN raw_pos.menu m ON od.menu_item_id = m.menu_item_id
JOIN raw_pos.franchise f ON t.franchise_id = f.franchise_id
JOIN raw_pos.location l ON oh.location_id = l.location_id
LEFT JOIN raw_customer.customer_loyalty cl ON oh.customer_id = cl.customer_id;

CREATE OR REPLACE VIEW analytics.orders_v AS
SELECT DATE(o.order_ts) AS date, * FROM harmonized.orders_v o;

-- Every loyalty customer x every non-beverage menu item, purchased 1 if the customer ever bought it.
-- The seed's version joined DISTINCT (customer, item, truck) rows, so an item bought from two
-- trucks gave the pair twice; here each pair appears exactly once. It reads the base tables
-- (not orders_v), so it needs no join through trucks, franchises and locations.
CREATE OR REPLACE VIEW analytics.loyalty_purchased_items AS
WITH items AS (
    SELECT DISTINCT menu_item_name FROM raw_pos.menu WHERE item_category <> 'Beverage'
),
bought AS (
    SELECT DISTINCT oh.customer_id, m.menu_item_name
    FROM raw_pos.order_header oh
    JOIN raw_pos.order_detail od ON od.order_id = oh.order_id
    JOIN raw_pos.menu m ON m.menu_item_id = od.menu_item_id
    WHERE oh.customer_id IS NOT NULL AND m.item_category <> 'Beverage'
)
SELECT c.customer_id, i.menu_item_name,
       CASE WHEN b.customer_id IS NULL THEN 0 ELSE 1 END AS purchased
FROM raw_customer.customer_loyalty c
CROSS JOIN items i
LEFT JOIN bought b ON b.customer_id = c.customer_id AND b.menu_item_name = i.menu_item_name;
