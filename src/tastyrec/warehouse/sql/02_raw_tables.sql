-- Raw zone tables, column for column (names, order, types) as in the seed's scripts/setup.sql.
-- Snowflake types map to DuckDB: NUMBER(p,0) -> BIGINT, NUMBER(38,4) -> DECIMAL(38,4),
-- VARCHAR(16777216) -> VARCHAR, TIMESTAMP_NTZ(9) -> TIMESTAMP, TIME(9) -> TIME, VARIANT -> JSON.

CREATE TABLE raw_pos.country (
    country_id BIGINT,
    country VARCHAR,
    iso_currency VARCHAR(3),
    iso_country VARCHAR(2),
    city_id BIGINT,
    city VARCHAR,
    city_population BIGINT
);

CREATE TABLE raw_pos.franchise (
    franchise_id BIGINT,
    first_name VARCHAR,
    last_name VARCHAR,
    city VARCHAR,
    country VARCHAR,
    e_mail VARCHAR,
    phone_number VARCHAR
);

CREATE TABLE raw_pos.location (
    location_id BIGINT,
    placekey VARCHAR,
    location VARCHAR,
    city VARCHAR,
    region VARCHAR,
    iso_country_code VARCHAR,
    country VARCHAR
);

CREATE TABLE raw_pos.menu (
    menu_id BIGINT,
    menu_type_id BIGINT,
    menu_type VARCHAR,
    menu_item_id BIGINT,
    menu_item_name VARCHAR,
    item_category VARCHAR,
    item_subcategory VARCHAR,
    cost_of_goods_usd DECIMAL(38, 4),
    sale_price_usd DECIMAL(38, 4),
    menu_item_health_metrics_obj JSON,
    truck_brand_name VARCHAR
);

CREATE TABLE raw_pos.truck (
    truck_id BIGINT,
    menu_type_id BIGINT,
    primary_city VARCHAR,
    region VARCHAR,
    iso_region VARCHAR,
    country VARCHAR,
    iso_country_code VARCHAR,
    franchise_flag BIGINT,
    year BIGINT,
    make VARCHAR,
    model VARCHAR,
    ev_flag BIGINT,
    franchise_id BIGINT,
    truck_opening_date DATE
);

CREATE TABLE raw_pos.order_header (
    order_id BIGINT,
    truck_id BIGINT,
    location_id DOUBLE,
    customer_id BIGINT,
    discount_id VARCHAR,
    shift_id BIGINT,
    shift_start_time TIME,
    shift_end_time TIME,
    order_channel VARCHAR,
    served_ts VARCHAR,
    order_currency VARCHAR(3),
    order_amount DECIMAL(38, 4),
    order_tax_amount VARCHAR,
    order_discount_amount VARCHAR,
    order_total DECIMAL(38, 4),
    order_ts TIMESTAMP
);

CREATE TABLE raw_pos.order_detail (
    order_detail_id BIGINT,
    order_id BIGINT,
    menu_item_id BIGINT,
    discount_id VARCHAR,
    line_number BIGINT,
    quantity DECIMAL(5, 0),
    unit_price DECIMAL(38, 4),
    price DECIMAL(38, 4),
    order_item_discount_amount VARCHAR
);

CREATE TABLE raw_customer.customer_loyalty (
    customer_id BIGINT,
    first_name VARCHAR,
    last_name VARCHAR,
    city VARCHAR,
    country VARCHAR,
    postal_code VARCHAR,
    preferred_language VARCHAR,
    gender VARCHAR,
    favourite_brand VARCHAR,
    marital_status VARCHAR,
    children_count VARCHAR,
    sign_up_date DATE,
    birthday_date DATE,
    e_mail VARCHAR,
    phone_number VARCHAR
);
