-- The activation stage's state (tessera.activation). outbox: one row per action ever
-- decided, keyed by a deterministic action_key (automation or journey step, contact,
-- trigger event or journey entry); the payload holds only what the send needs and is
-- dropped once sent. outbox_attempts: one row per SMTP attempt (HTTP attempts are in
-- exports.delivery_attempts, linked by delivery_batch). No primary key: its index made
-- inserts the costliest step at scale; the anti-join on action_key keeps keys unique and
-- the asset check `no_action_twice` proves it.
CREATE TABLE IF NOT EXISTS activation.outbox (
    action_key VARCHAR NOT NULL, as_of_date DATE NOT NULL, origin VARCHAR NOT NULL,
    name VARCHAR NOT NULL, step VARCHAR NOT NULL, customer_id BIGINT NOT NULL, ref VARCHAR NOT NULL,
    kind VARCHAR NOT NULL, channel VARCHAR NOT NULL, target VARCHAR NOT NULL, payload VARCHAR,
    status VARCHAR NOT NULL, attempts INTEGER NOT NULL, delivery_batch VARCHAR,
    queued_at TIMESTAMP NOT NULL, sent_at TIMESTAMP, last_error VARCHAR,
    version VARCHAR);
-- the rendered subject of each e-mail queued (the page's journeys tab shows what was sent;
-- the outbox's payload is dropped once sent and never published); no address in it
CREATE TABLE IF NOT EXISTS activation.outbox_subjects (
    action_key VARCHAR NOT NULL, customer_id BIGINT NOT NULL, subject VARCHAR);
CREATE TABLE IF NOT EXISTS activation.outbox_attempts (
    action_key VARCHAR NOT NULL, customer_id BIGINT NOT NULL, attempt INTEGER NOT NULL,
    started_at TIMESTAMP NOT NULL, outcome VARCHAR NOT NULL, error VARCHAR);
-- the days evaluated (state advances one day at a time, in order)
CREATE TABLE IF NOT EXISTS activation.evaluated_days (
    as_of_date DATE NOT NULL, evaluated_at TIMESTAMP NOT NULL);
-- each journey definition ever run, so contacts finish the version they started
CREATE TABLE IF NOT EXISTS activation.journey_versions (
    journey VARCHAR NOT NULL, version VARCHAR NOT NULL, definition VARCHAR NOT NULL,
    first_seen DATE NOT NULL);
-- one row per contact per journey entry: where it is now
CREATE TABLE IF NOT EXISTS activation.journey_state (
    journey VARCHAR NOT NULL, version VARCHAR NOT NULL, customer_id BIGINT NOT NULL,
    entered_on DATE NOT NULL, step VARCHAR, step_since DATE NOT NULL, branch VARCHAR,
    status VARCHAR NOT NULL, updated_on DATE NOT NULL);
-- every move: entered, waited, checked_yes/no, acted/blocked/capped, branched, ended, exited
CREATE TABLE IF NOT EXISTS activation.journey_history (
    journey VARCHAR NOT NULL, version VARCHAR NOT NULL, customer_id BIGINT NOT NULL,
    entered_on DATE NOT NULL, as_of_date DATE NOT NULL, step VARCHAR NOT NULL,
    outcome VARCHAR NOT NULL, next_step VARCHAR, branch VARCHAR);
CREATE TABLE IF NOT EXISTS activation.coupons (
    code VARCHAR NOT NULL, campaign VARCHAR NOT NULL, customer_id BIGINT NOT NULL,
    origin VARCHAR NOT NULL, name VARCHAR NOT NULL, ref VARCHAR NOT NULL, issued_on DATE NOT NULL,
    valid_until DATE NOT NULL, discount VARCHAR, action_key VARCHAR NOT NULL);
