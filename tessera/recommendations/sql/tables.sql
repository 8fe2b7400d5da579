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
;
-- The models the lists are ranked with, trained every retrain_every_days (the days
-- between rank the contacts whose inputs changed with the stored model, and carry the
-- other contacts' lists): one row per training, keyed by its day and the settings' hash.
CREATE TABLE IF NOT EXISTS recommendations.models (
    trained_on DATE NOT NULL, settings_hash VARCHAR NOT NULL, weight_set VARCHAR NOT NULL,
    weights VARCHAR NOT NULL, trained_at TIMESTAMP NOT NULL);
-- per product of the training's catalogue: its number, best-seller rank, repeat rate and
-- its row in the collaborative model (with whether the model may recommend it)
CREATE TABLE IF NOT EXISTS recommendations.model_products (
    trained_on DATE NOT NULL, product_id VARCHAR NOT NULL, pid INTEGER NOT NULL,
    pop_rank BIGINT, repeat_rate DOUBLE, als_i INTEGER, als_candidate BOOLEAN);
-- the collaborative model's product factors, one row per (product row, factor)
CREATE TABLE IF NOT EXISTS recommendations.model_factors (
    trained_on DATE NOT NULL, als_i INTEGER NOT NULL, k INTEGER NOT NULL, value FLOAT NOT NULL);
-- the item-to-item scores of the co-occurrence kinds
CREATE TABLE IF NOT EXISTS recommendations.model_pairs (
    trained_on DATE NOT NULL, kind VARCHAR NOT NULL, a VARCHAR NOT NULL, b VARCHAR NOT NULL,
    score DOUBLE NOT NULL);
-- per day of lists: the model and the context (settings, catalogue) they were ranked in,
-- and per contact the signature of the inputs its lists were ranked from. A contact
-- whose signature is the same in the same context gets the same lists: they are carried.
CREATE TABLE IF NOT EXISTS recommendations.list_days (
    as_of_date DATE NOT NULL, trained_on DATE NOT NULL, context VARCHAR NOT NULL,
    ranked_contacts BIGINT NOT NULL, carried_contacts BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS recommendations.list_inputs (
    as_of_date DATE NOT NULL, customer_id BIGINT NOT NULL, signature VARCHAR NOT NULL)
