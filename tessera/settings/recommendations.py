"""Settings of product recommendations (``recommendations.yaml``).

Why these knobs: the kinds differ by catalogue. A fashion shop wants discovery and
excludes what was bought; a grocer wants "buy again" and short windows. Weights of the
combination are here so that the back-test (the evaluation table) can be used to tune
them without code.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from tessera.settings.base import _Strict

# The kinds of the SALESmanago contact card, plus "buy again" (repeat purchases, kept
# apart from discovery) and the popularity baseline every kind is measured against.
DISCOVERY_KINDS = ("collaborative", "bought_after_viewing", "viewed_together", "bought_together")
Kind = Literal["collaborative", "bought_after_viewing", "viewed_together", "bought_together",
               "combined", "buy_again"]
ALL_KINDS: tuple[str, ...] = (*DISCOVERY_KINDS, "combined", "buy_again")
BASELINE = "popular"


class AlsSettings(_Strict):
    """implicit's alternating least squares on purchases (weight 1) and views."""

    factors: int = Field(32, ge=2, le=512)
    iterations: int = Field(5, ge=1, le=200)
    # the day's fit starts from the back-test's factors and runs only this many
    warm_iterations: int = Field(2, ge=1, le=200)
    regularization: float = Field(0.05, ge=0)
    alpha: float = Field(20.0, gt=0)          # confidence = 1 + alpha * weight
    view_weight: float = Field(0.25, ge=0)    # a view counts this much of a purchase
    seed: int = 42
    # products bought by fewer contacts in the window are not recommended by the model
    # (they still take part in the fit): scoring every product for every contact is most
    # of the top lists' cost on a long-tail catalogue (0: any product the model knows)
    min_buyers: int = Field(10, ge=0)


class Evaluation(_Strict):
    """The back-test: the last ``holdout_days`` of purchases are hidden from training."""

    enabled: bool = True
    holdout_days: int = Field(28, ge=1, le=3650)
    k: int = Field(10, ge=1, le=100)
    # score a few weight sets of the combination on the held-out window and use the best
    # (recommendations.combination_weights); off: the configured weights
    tune_weights: bool = True
    # run the back-test (figures and tuning) only when the last one is this many days old
    # or more; the days between use its chosen weights (and a full, cold ALS fit): about
    # a third of a day's CPU saved on those days (bench, 50k customers)
    every_days: int = Field(1, ge=1, le=365)
    # score (and tune the weights on) at most this many of the contacts with a held-out
    # purchase: those with the smallest hash of their id, the same ones every run; every
    # contact when fewer (0: always every contact). The lists of the back-test are built
    # for them only, so its cost follows this number, not the shop's size. 20 000: on the
    # bench (77 585 such contacts) the same chosen weights and every NDCG within 0.004 of
    # a 50 000 sample, for about a quarter less of the back-test day's CPU
    sample_contacts: int = Field(20_000, ge=0)


class RecommendationSettings(_Strict):
    kinds: list[Kind] = list(ALL_KINDS)
    top_n: int = Field(10, ge=1, le=100)
    exclude_bought: bool = True                 # discovery kinds skip what the contact bought
    exclude_products: list[str] = []            # inactive or withdrawn product ids
    history_days: int = Field(365, ge=1)        # interactions older than this are ignored
    recent_days: int = Field(30, ge=1)          # a contact's views that seed the item-to-item kinds
    popularity_days: int = Field(90, ge=1)      # best sellers: orders here first, then history
    after_view_days: int = Field(7, ge=0)       # a purchase this soon after a view follows it
    min_support: int = Field(2, ge=1)           # fewer customers/orders/sessions: the pair is noise
    neighbours: int = Field(10, ge=1, le=1000)  # item-to-item: best neighbours kept per product
    max_basket: int = Field(50, ge=2)           # larger orders/sessions are left out of the pairs
    candidates: int = Field(20, ge=0, le=1000)  # extra candidates so exclusions still leave top_n
    lift: bool = True                           # bought together by lift, not by raw co-occurrence
    # buy_again counts only with exclude_bought off (a repeat-purchase catalogue)
    weights: dict[str, float] = {"collaborative": 1.0, "bought_after_viewing": 1.0,
                                 "viewed_together": 0.5, "bought_together": 1.0, "popular": 0.1}
    view_event_types: list[str] = ["page_view"]
    # Product id in a view: the event's ``product_id`` property, else this pattern's first
    # group on the ``url`` property.
    product_url_pattern: str = r"/(?:prodotti|produkty|products?)/([A-Za-z0-9_.-]+)"
    keep_days: int = Field(7, ge=1)             # days of lists kept in the table
    # Train the model (pairs, best sellers, repeat rates, the collaborative fit, and the
    # back-test when due) when the last one is this many days old; the days between rank
    # only the contacts whose inputs changed, with the stored model, and carry the other
    # lists (the same lists a full ranking with that model gives). 1: train every day.
    retrain_every_days: int = Field(7, ge=1, le=365)
    als: AlsSettings = AlsSettings()
    evaluation: Evaluation = Evaluation()

    @model_validator(mode="after")
    def _weights_name_kinds(self):
        known = {*DISCOVERY_KINDS, BASELINE, "buy_again"}
        unknown = set(self.weights) - known
        if unknown:
            raise ValueError(f"weights name unknown kinds {sorted(unknown)}; use {sorted(known)}")
        return self
