-- The predictions layer's tables: per contact per day, the back-test's accuracy per day,
-- the fitted parameters of the customer-base models per day, and the models a training day
-- stored for the days that score with them (pickled, base64: a text column every engine holds).
CREATE TABLE IF NOT EXISTS predictions.customer_predictions (
    as_of_date DATE NOT NULL, customer_id BIGINT NOT NULL, status VARCHAR NOT NULL,
    purchases BIGINT NOT NULL, days_since_last_purchase INTEGER, p_alive DOUBLE,
    expected_purchases_30d DOUBLE, expected_purchases_90d DOUBLE,
    expected_purchases_365d DOUBLE, expected_purchases DOUBLE, expected_order_value DOUBLE,
    clv DOUBLE, purchase_propensity DOUBLE, churn_risk DOUBLE, churn_band VARCHAR,
    model_version VARCHAR NOT NULL);
CREATE TABLE IF NOT EXISTS predictions.accuracy (
    as_of_date DATE NOT NULL, model_version VARCHAR NOT NULL, target VARCHAR NOT NULL,
    model VARCHAR NOT NULL, is_baseline BOOLEAN NOT NULL, metric VARCHAR NOT NULL,
    value DOUBLE, cutoff_date DATE NOT NULL, window_days INTEGER NOT NULL,
    customers BIGINT NOT NULL, positives DOUBLE NOT NULL);
CREATE TABLE IF NOT EXISTS predictions.model_parameters (
    as_of_date DATE NOT NULL, model_version VARCHAR NOT NULL, model VARCHAR NOT NULL,
    cutoff_date DATE NOT NULL, parameter VARCHAR NOT NULL, value DOUBLE,
    customers BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS predictions.models (
    trained_on DATE NOT NULL, model_version VARCHAR NOT NULL, runtime VARCHAR NOT NULL,
    model VARCHAR NOT NULL, stored_at TIMESTAMP NOT NULL)
