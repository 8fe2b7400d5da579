-- The contact cards' search keys, folded once per run instead of on every search: the text
-- a search word must be found in (names, e-mail, birth date, city, ERP id, tax code; lower
-- case, no accents), the gender, the phone digits (E.164 without '+') and the registry
-- order of the Sendero seed (surname and name, else e-mail), plus the columns a result
-- list shows, so that a search reads this table and the token index only. The web page
-- folds the cards itself (this select as a CTE) when the table is not there.
SELECT customer_id,
       lower(strip_accents(concat_ws(' ', first_name, last_name, email, CAST(birth_date AS VARCHAR),
                                     city, erp_id, tax_code))) AS search_text,
       lower(coalesce(gender, '')) AS gender_key,
       concat_ws(' ', replace(coalesce(mobile, ''), '+', ''), replace(coalesce(phone, ''), '+', '')) AS phone_digits,
       coalesce(last_name, '') <> '' OR coalesce(first_name, '') <> '' AS named,
       lower(strip_accents(coalesce(nullif(last_name, ''), email, ''))) AS sort_key,
       lower(strip_accents(coalesce(first_name, ''))) AS sort_name,
       coalesce(email, '') AS sort_email,
       last_name AS surname, first_name AS name, email, mobile, city, birth_date,
       order_number AS orders
FROM marts.contact_cards
