"""Every DuckDB-only spelling the stages use, in one place, with its Spark counterpart.

Why: stage SQL is written in DuckDB's dialect (the reference engine) and transpiled by
sqlglot for other engines. sqlglot translates most of it (``QUALIFY`` into a
subquery, ``GROUP BY ALL``, list lambdas, casts, ``list_contains``). What it cannot
translate, because the function does not exist elsewhere or means something else
there, is either written through a helper below or listed in
:data:`SPARK_EQUIVALENTS` with the way the Spark engine provides it. The portability
check (:mod:`tessera.engine.portability`) fails on any other function Spark lacks.
"""

from __future__ import annotations

# DuckDB functions Spark lacks (or spells differently with other semantics), and how a
# Spark engine provides each: a SQL expression template over the arguments ({0}, {1},
# ...) or the name of a UDF that the Spark engine registers.
SPARK_EQUIVALENTS: dict[str, str] = {
    # accents folded for match keys (NFD and drop the combining marks)
    "strip_accents": "udf:tessera_strip_accents",
    # a 64-bit hash of the values: DuckDB's hash() and Spark's xxhash64() differ, so a
    # warehouse keeps the one it was made with (ops.warehouse_info records which)
    "hash": "xxhash64({args})",
    # parse a date/time in a strftime format, NULL when it does not parse
    "try_strptime": "try_to_timestamp({0}, udf:strftime_to_java({1}))",
    "strftime": "date_format({0}, udf:strftime_to_java({1}))",
    # the keyed HMAC macro of the suppression ledger (tessera.privacy.suppression)
    "tessera_hmac": "udf:tessera_hmac",
    # the identity stage's name and address similarity (Spark has levenshtein only)
    "jaro_winkler_similarity": "udf:tessera_jaro_winkler",
    # the sum of a list (check characters of tax codes and VAT numbers; lists never empty)
    "list_sum": "aggregate({0}, 0, (acc, x) -> acc + x)",
    "regexp_full_match": "({0} RLIKE concat('^(?:', {1}, ')$'))",
    "list_has_any": "arrays_overlap({0}, {1})",
    "epoch": "unix_timestamp({0})",
    "today": "current_date()",
    # the search's token index: split on a regular expression (Java's knows \\pL and \\pN)
    "regexp_split_to_array": "split({0}, {1})",
}

# Spark SQL's built-in functions (Spark 3.5), by name: every function of a step's SQL
# after sqlglot translated it for Spark must be one of these, or the step must route
# the DuckDB function through SPARK_EQUIVALENTS. sqlglot alone is not enough: it emits
# names Spark lacks (REGEXP_FULL_MATCH, JAROWINKLER_SIMILARITY) without complaint.
SPARK_FUNCTIONS: frozenset[str] = frozenset("""
any any_value approx_count_distinct approx_percentile array_agg avg bit_and bit_or bit_xor bool_and bool_or collect_list
collect_set corr count count_if covar_pop covar_samp every first first_value grouping grouping_id kurtosis
last last_value max max_by mean median min min_by mode percentile percentile_approx skewness
some std stddev stddev_pop stddev_samp sum try_avg try_sum var_pop var_samp variance cume_dist
dense_rank lag lead nth_value ntile percent_rank rank row_number array array_append array_compact array_contains
array_distinct array_except array_insert array_intersect array_join array_max array_min array_position array_prepend array_remove array_repeat array_size
array_sort array_union arrays_overlap arrays_zip flatten get sequence shuffle slice sort_array element_at cardinality
size explode explode_outer posexplode inline aggregate reduce exists filter forall transform zip_with
map map_concat map_contains_key map_entries map_filter map_from_arrays map_from_entries map_keys map_values map_zip_with str_to_map transform_keys
transform_values named_struct struct add_months convert_timezone curdate current_date current_timestamp current_timezone date_add date_diff date_format
date_from_unix_date date_part date_sub date_trunc dateadd datediff datepart day dayofmonth dayofweek dayofyear extract
from_unixtime from_utc_timestamp hour last_day localtimestamp make_date make_dt_interval make_interval make_timestamp make_ym_interval minute month
months_between next_day now quarter second timestamp_micros timestamp_millis timestamp_seconds timestampadd timestampdiff to_date to_timestamp
to_unix_timestamp to_utc_timestamp trunc try_to_timestamp unix_date unix_micros unix_millis unix_seconds unix_timestamp weekday weekofyear year
ascii base64 bit_count bit_length btrim char char_length character_length chr concat concat_ws contains decode
elt encode endswith find_in_set format_number format_string ilike initcap instr lcase left len
length levenshtein like locate lower lpad ltrim luhn_check mask octet_length overlay position
printf regexp regexp_count regexp_extract regexp_extract_all regexp_instr regexp_like regexp_replace regexp_substr repeat replace reverse
right rlike rpad rtrim sentences soundex space split split_part startswith substr substring
substring_index to_binary to_char to_number to_varchar translate trim try_to_binary try_to_number ucase unbase64 upper
abs acos acosh asin asinh atan atan2 atanh bin bround cbrt ceil
ceiling conv cos cosh cot csc degrees e exp expm1 factorial floor
greatest hex hypot least ln log log10 log1p log2 mod negative pi
pmod positive pow power radians rand randn random rint round sec shiftleft
shiftright sign signum sin sinh sqrt tan tanh try_add try_divide try_multiply try_subtract
unhex width_bucket div coalesce if ifnull nanvl nullif nvl nvl2 isnull isnotnull
isnan assert_true raise_error crc32 hash md5 sha sha1 sha2 xxhash64 from_json get_json_object
json_array_length json_object_keys json_tuple schema_of_json to_json current_catalog current_database current_schema current_user input_file_name monotonically_increasing_id spark_partition_id
typeof uuid version try_element_at
""".split())


def hash64(*exprs: str) -> str:
    """A 64-bit hash of the values (DuckDB ``hash``; Spark ``xxhash64``)."""
    return f"hash({', '.join(exprs)})"


def fold_accents(expr: str) -> str:
    """Accents folded (``Lucía`` -> ``Lucia``)."""
    return f"strip_accents({expr})"


def try_parse_timestamp(expr: str, fmt_literal: str) -> str:
    """A timestamp parsed with a strftime format, NULL when it does not parse."""
    return f"try_strptime({expr}, {fmt_literal})"


def sha256_hex(expr: str) -> str:
    """Lower-case hex SHA-256 of a text (DuckDB ``sha256``; Spark ``sha2(x, 256)``)."""
    return f"sha256({expr})"
