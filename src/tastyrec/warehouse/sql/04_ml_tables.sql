-- The seed's ML tables. Age is computed as of the latest order in the warehouse (the seed used
-- CURRENT_DATE, which makes the table change from one day to the next).

CREATE OR REPLACE TABLE ml.customer_features AS
SELECT customer_id, city, country, gender, marital_status, birthday_date,
       date_diff('year', birthday_date,
                 (SELECT COALESCE(MAX(order_ts)::DATE, CURRENT_DATE) FROM raw_pos.order_header)) AS age
FROM raw_customer.customer_loyalty;

CREATE OR REPLACE TABLE ml.menu_item_features AS
SELECT menu_type, truck_brand_name, menu_item_name, item_category, item_subcategory, sale_price_usd
FROM raw_pos.menu;

-- Saved recommendation runs ("campaigns"): one row per customer x rank, written all at once by
-- tastyrec.campaigns.save together with <home>/stage/recommendations/<run_id>.parquet and .csv.
CREATE TABLE IF NOT EXISTS ml.recommendations (
    run_id VARCHAR NOT NULL,
    created_at TIMESTAMP NOT NULL,
    model_version VARCHAR,
    filters JSON,
    customer_id BIGINT NOT NULL,
    rank INTEGER NOT NULL,
    menu_item_name VARCHAR NOT NULL,
    score DOUBLE,
    name VARCHAR,
    PRIMARY KEY (run_id, customer_id, rank)
);
