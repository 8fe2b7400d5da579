-- The marketing layer's tables. The rule base reads scores, stages, RFM and tags:
-- they exist (empty) even when a deployment has no scoring or stages, so rules run.
CREATE TABLE IF NOT EXISTS marketing.rfm_scores (
    as_of_date DATE NOT NULL, customer_id BIGINT NOT NULL, recency_days INTEGER,
    frequency BIGINT, monetary DECIMAL(18,2), r_score TINYINT, f_score TINYINT,
    m_score TINYINT, rfm_score VARCHAR, rfm_group VARCHAR);
CREATE TABLE IF NOT EXISTS marketing.scores (
    as_of_date DATE NOT NULL, score_type VARCHAR NOT NULL, customer_id BIGINT NOT NULL,
    score DECIMAL(12,2) NOT NULL);
CREATE TABLE IF NOT EXISTS marketing.score_actions (
    as_of_date DATE NOT NULL, score_type VARCHAR NOT NULL, threshold DOUBLE NOT NULL,
    customer_id BIGINT NOT NULL, action VARCHAR NOT NULL, target VARCHAR NOT NULL,
    score DECIMAL(12,2) NOT NULL, previous_score DECIMAL(12,2));
CREATE TABLE IF NOT EXISTS marketing.stages (
    as_of_date DATE NOT NULL, customer_id BIGINT NOT NULL, stage VARCHAR NOT NULL,
    stage_rank INTEGER NOT NULL);
-- tags added by other stages (automations and journeys: origin 'automation:<name>' ...)
CREATE TABLE IF NOT EXISTS marketing.tag_assignments (
    customer_id BIGINT NOT NULL, tag VARCHAR NOT NULL, added_on DATE NOT NULL,
    origin VARCHAR NOT NULL);
CREATE OR REPLACE VIEW marketing.contact_tags AS
    SELECT customer_id, target AS tag, min(as_of_date) AS added_on,
           'score:' || any_value(score_type) AS origin
    FROM marketing.score_actions WHERE action = 'tag' GROUP BY customer_id, target
    UNION ALL
    SELECT customer_id, tag, min(added_on), min(origin) FROM marketing.tag_assignments
    GROUP BY customer_id, tag;

-- segment membership per day, its history, overrides and static bases
CREATE TABLE IF NOT EXISTS marketing.segment_members (
    as_of_date DATE NOT NULL, segment VARCHAR NOT NULL, customer_id BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS marketing.segment_history (
    segment VARCHAR NOT NULL, customer_id BIGINT NOT NULL, entered_on DATE NOT NULL, left_on DATE);
CREATE TABLE IF NOT EXISTS marketing.segment_overrides (
    segment VARCHAR NOT NULL, customer_id BIGINT NOT NULL, action VARCHAR NOT NULL,
    effective_on DATE NOT NULL, recorded_at TIMESTAMP NOT NULL, origin VARCHAR);
CREATE TABLE IF NOT EXISTS marketing.static_segment_base (
    segment VARCHAR NOT NULL, customer_id BIGINT NOT NULL, frozen_on DATE NOT NULL);

-- stage history and the daily funnel
CREATE TABLE IF NOT EXISTS marketing.stage_history (
    customer_id BIGINT NOT NULL, stage VARCHAR NOT NULL, stage_rank INTEGER NOT NULL,
    entered_on DATE NOT NULL, left_on DATE);
CREATE TABLE IF NOT EXISTS marketing.funnel_daily (
    as_of_date DATE NOT NULL, stage VARCHAR NOT NULL, stage_rank INTEGER NOT NULL,
    contacts BIGINT NOT NULL, at_or_beyond BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS marketing.stage_runs (as_of_date DATE NOT NULL, staged BIGINT NOT NULL);
