-- Ground truth of the synthetic generator. No training step reads this schema; evaluation
-- uses it to report the oracle (the best ranking any model could make).
CREATE TABLE synth.true_propensity (
    customer_id BIGINT,
    menu_item_name VARCHAR,
    propensity DOUBLE   -- P(customer buys the item at least once in the final window)
);
CREATE TABLE synth.info (
    key VARCHAR PRIMARY KEY,
    value VARCHAR
);
