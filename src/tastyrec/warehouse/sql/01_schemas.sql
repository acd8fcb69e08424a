-- Schemas of the seed's Tasty Bytes database, plus `synth` for the generator's ground truth.
CREATE SCHEMA IF NOT EXISTS raw_pos;
CREATE SCHEMA IF NOT EXISTS raw_customer;
CREATE SCHEMA IF NOT EXISTS harmonized;
CREATE SCHEMA IF NOT EXISTS analytics;
CREATE SCHEMA IF NOT EXISTS ml;
CREATE SCHEMA IF NOT EXISTS synth;
