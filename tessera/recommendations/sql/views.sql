-- One view per kind over its latest built day (recommendations.<kind>), and the top
-- products of the combination as one list per contact, for the card and for feeds.
CREATE OR REPLACE VIEW recommendations.collaborative AS
SELECT as_of_date, customer_id, rank, product_id, score FROM recommendations.contact_products
WHERE kind = 'collaborative' AND as_of_date = (SELECT max(as_of_date) FROM recommendations.contact_products);
CREATE OR REPLACE VIEW recommendations.bought_after_viewing AS
SELECT as_of_date, customer_id, rank, product_id, score FROM recommendations.contact_products
WHERE kind = 'bought_after_viewing' AND as_of_date = (SELECT max(as_of_date) FROM recommendations.contact_products);
CREATE OR REPLACE VIEW recommendations.viewed_together AS
SELECT as_of_date, customer_id, rank, product_id, score FROM recommendations.contact_products
WHERE kind = 'viewed_together' AND as_of_date = (SELECT max(as_of_date) FROM recommendations.contact_products);
CREATE OR REPLACE VIEW recommendations.bought_together AS
SELECT as_of_date, customer_id, rank, product_id, score FROM recommendations.contact_products
WHERE kind = 'bought_together' AND as_of_date = (SELECT max(as_of_date) FROM recommendations.contact_products);
CREATE OR REPLACE VIEW recommendations.combined AS
SELECT as_of_date, customer_id, rank, product_id, score FROM recommendations.contact_products
WHERE kind = 'combined' AND as_of_date = (SELECT max(as_of_date) FROM recommendations.contact_products);
CREATE OR REPLACE VIEW recommendations.buy_again AS
SELECT as_of_date, customer_id, rank, product_id, score FROM recommendations.contact_products
WHERE kind = 'buy_again' AND as_of_date = (SELECT max(as_of_date) FROM recommendations.contact_products);
CREATE OR REPLACE VIEW recommendations.popular AS
SELECT as_of_date, customer_id, rank, product_id, score FROM recommendations.contact_products
WHERE kind = 'popular' AND as_of_date = (SELECT max(as_of_date) FROM recommendations.contact_products);
CREATE OR REPLACE VIEW recommendations.card_products AS
SELECT customer_id, as_of_date, list(product_id ORDER BY rank) AS recommended_products
FROM recommendations.combined GROUP BY customer_id, as_of_date
