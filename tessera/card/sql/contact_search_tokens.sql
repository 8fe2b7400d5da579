-- The search's token index: one row per (token, person), sorted by token, so that "a word
-- of this person starts with X" is a range scan (token >= X AND token < X+1) that reads
-- one or two row groups of the published Parquet instead of every card. Tokens:
--   the words of the folded search text (split on anything not a letter or digit),
--   '~' || the gender key and '!' || the customer id (matched whole, never as a prefix),
--   '@' || the folded e-mail (a word with an '@' is a prefix of it: its parts alone,
--   "example" and "invalid", would each match a million people),
--   '#' || every suffix of at least 4 digits of each phone (a prefix of a suffix is any
--   run of digits inside the number, as the search has always matched phones).
-- A query word is split the same way (tessera.web.queries.word_tokens), so "Rossì",
-- "ROSSI" and "ross" all find "Rossi". search_rank is the registry order, so the first
-- 50 hits are the 50 smallest ranks. A word repeated in one card gives two equal rows: the
-- search's set operations drop them, cheaper than a DISTINCT over every token here.
SELECT token, search_rank, customer_id FROM (
    SELECT search_rank, customer_id,
           unnest(regexp_split_to_array(search_text, '[^\pL\pN]+')) AS token
    FROM marts.contact_search
    UNION ALL
    SELECT search_rank, customer_id, '~' || gender_key FROM marts.contact_search WHERE gender_key <> ''
    UNION ALL
    SELECT search_rank, customer_id, '!' || CAST(customer_id AS VARCHAR) FROM marts.contact_search
    UNION ALL
    SELECT search_rank, customer_id, '@' || lower(strip_accents(email)) FROM marts.contact_search
    WHERE coalesce(email, '') <> ''
    UNION ALL
    SELECT search_rank, customer_id, '#' || substr(digits, start) FROM (
        SELECT search_rank, customer_id, digits, unnest(range(1, length(digits) - 2)) AS start
        FROM (SELECT search_rank, customer_id, unnest(string_split(phone_digits, ' ')) AS digits
              FROM marts.contact_search) AS p
        WHERE length(digits) >= 4) AS s
) AS t
WHERE token <> ''
