-- Product recommendations: the lists of every kind per contact and day, the back-test
-- figures per day, the combination's weight sets the back-test scored (the chosen one
-- makes the day's combination), and the product ids the catalogue does not know
-- (reported, not used).
CREATE SCHEMA IF NOT EXISTS recommendations;
CREATE TABLE IF NOT EXISTS recommendations.contact_products (
    as_of_date DATE NOT NULL, kind VARCHAR NOT NULL, customer_id BIGINT NOT NULL,
    rank INTEGER NOT NULL, product_id VARCHAR NOT NULL, score DOUBLE NOT NULL);
CREATE TABLE IF NOT EXISTS recommendations.evaluation (
    as_of_date DATE NOT NULL, mode VARCHAR NOT NULL, kind VARCHAR NOT NULL, k INTEGER NOT NULL,
    cutoff_date DATE NOT NULL, contacts BIGINT NOT NULL, hit_rate DOUBLE, precision_at_k DOUBLE,
    recall_at_k DOUBLE, map_at_k DOUBLE, ndcg_at_k DOUBLE, coverage DOUBLE);
CREATE TABLE IF NOT EXISTS recommendations.combination_weights (
    as_of_date DATE NOT NULL, mode VARCHAR NOT NULL, weight_set VARCHAR NOT NULL,
    kind VARCHAR NOT NULL, weight DOUBLE NOT NULL, ndcg_at_k DOUBLE NOT NULL,
    chosen BOOLEAN NOT NULL);
CREATE TABLE IF NOT EXISTS recommendations.unknown_products (
    as_of_date DATE NOT NULL, origin VARCHAR NOT NULL, product_id VARCHAR NOT NULL,
    occurrences BIGINT NOT NULL)
