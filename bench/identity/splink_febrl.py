"""Splink reference on a FEBRL data set (as written by ``febrl.py``), timed and scored.

    python bench/identity/splink_febrl.py --landing DIR --truth truth.csv --out result.json

The model has the usual shape for person records (Splink's own FEBRL examples):
name comparisons with term frequencies, date of birth, the id by edit distance, street
by Jaro-Winkler, postcode and suburb; blocking on the same key sets as Tessera's default
(plus the id); lambda from deterministic rules, ``u`` by random sampling, ``m`` by EM
blocked on two different key sets. Threshold: match probability 0.9, as for the shared
synthetic reference. Nothing is tuned to the truth.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

SHARED = Path(os.environ.get("TESSERA_IDENTITY_BENCH", "/work/shared/bench/identity"))
sys.path.insert(0, str(SHARED))

CLEAN_SQL = """
CREATE TABLE recs AS
SELECT rec_id,
       nullif(lower(trim(given_name)), '') AS given_name,
       nullif(lower(trim(surname)), '') AS surname,
       nullif(lower(trim(street)), '') AS street,
       nullif(lower(trim(suburb)), '') AS suburb,
       nullif(trim(postcode), '') AS postcode,
       nullif(trim(date_of_birth), '') AS date_of_birth,
       nullif(trim(soc_sec_id), '') AS soc_sec_id
FROM read_csv('{glob}', all_varchar = true, header = true)
"""


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--landing", required=True)
    ap.add_argument("--truth", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--threshold", type=float, default=0.9)
    a = ap.parse_args()

    import duckdb
    import pair_scorer
    import splink.comparison_library as cl
    from splink import DuckDBAPI, Linker, SettingsCreator, block_on

    t0 = time.perf_counter()
    con = duckdb.connect()
    con.execute(CLEAN_SQL.format(glob=os.path.join(a.landing, "*.csv")))
    settings = SettingsCreator(
        link_type="dedupe_only",
        unique_id_column_name="rec_id",
        blocking_rules_to_generate_predictions=[
            block_on("given_name", "surname"), block_on("surname", "date_of_birth"),
            block_on("given_name", "date_of_birth"), block_on("date_of_birth", "postcode"),
            block_on("surname", "postcode"), block_on("soc_sec_id"), block_on("street"),
        ],
        comparisons=[
            cl.NameComparison("given_name").configure(term_frequency_adjustments=True),
            cl.NameComparison("surname").configure(term_frequency_adjustments=True),
            cl.DateOfBirthComparison("date_of_birth", input_is_string=True, datetime_format="%Y%m%d",
                                     invalid_dates_as_null=True),
            cl.LevenshteinAtThresholds("soc_sec_id", [1, 2]),
            cl.JaroWinklerAtThresholds("street", [0.95, 0.85]),
            cl.LevenshteinAtThresholds("postcode", [1]),
            cl.ExactMatch("suburb").configure(term_frequency_adjustments=True),
        ],
        retain_matching_columns=False,
        retain_intermediate_calculation_columns=False,
    )
    db = DuckDBAPI(con)
    linker = Linker(db.register("recs"), settings, log_level=logging.WARNING)
    linker.training.estimate_probability_two_random_records_match(
        [block_on("soc_sec_id"), block_on("given_name", "surname", "date_of_birth")], recall=0.8)
    linker.training.estimate_u_using_random_sampling(max_pairs=1e7, seed=42)
    linker.training.estimate_parameters_using_expectation_maximisation(block_on("given_name", "surname"))
    linker.training.estimate_parameters_using_expectation_maximisation(block_on("date_of_birth", "postcode"))
    pred = linker.inference.predict(threshold_match_probability=0.01)
    clusters = linker.clustering.cluster_pairwise_predictions_at_threshold(
        pred, threshold_match_probability=a.threshold)
    cdf = con.execute(f"SELECT rec_id, cluster_id FROM {clusters.physical_name}").df()
    elapsed = time.perf_counter() - t0

    truth = pair_scorer.load_truth(None, a.truth)
    score = pair_scorer.score_clusters(cdf.astype(str), truth)
    res = {"in_process_s": round(elapsed, 2), **{k: round(score[k], 4) for k in ("precision", "recall", "f1")},
           **{k: int(score[k]) for k in ("tp", "fp", "fn")}}
    Path(a.out).write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
