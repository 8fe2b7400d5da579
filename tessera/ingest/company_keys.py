"""Company match keys: legal names, cities and VAT numbers folded into comparable keys.

Why here and not in ``tessera.companies``: staging computes these keys once, as columns
of the B2B staging tables, so that company resolution and user linking compare
precomputed keys. Ingestion sits below the companies stage, so the key functions live
with it.
"""

from __future__ import annotations

from tessera.ingest.vat import vat_key_sql

# Legal forms folded out of the name key (after dots are removed and anything but
# letters and digits became one space): Italian, Polish and the common foreign ones.
# Longest first, so "sp z oo" goes before "sp".
LEGAL_FORMS = sorted({
    "srl", "srls", "s r l", "s r l s", "spa", "s p a", "sapa", "s a p a", "sas", "s a s",
    "snc", "s n c", "ss", "scarl", "scrl", "soc coop", "societa cooperativa", "coop",
    "societa a responsabilita limitata", "societa a responsabilita limitata semplificata",
    "societa per azioni", "societa in accomandita semplice", "societa in nome collettivo",
    "unipersonale", "in liquidazione",
    "sp z oo", "spzoo", "sp z o o", "sp k", "spk", "sp j", "spj", "ska", "sa", "s a",
    "gmbh", "ag", "kg", "ltd", "limited", "llc", "inc", "plc", "sarl", "bv", "nv", "sl",
    "e c", "c",
}, key=lambda f: (-len(f), f))


# Names too common to identify a company without its city (compared as name keys).
GENERIC_NAMES = [
    "bar", "bar centrale", "bar sport", "ristorante", "pizzeria", "trattoria", "albergo",
    "hotel", "farmacia", "tabaccheria", "edilizia", "impresa edile", "autofficina",
    "studio associato", "studio tecnico", "panificio", "macelleria", "ferramenta",
    "parrucchiere", "idraulica", "elettrica", "trasporti", "immobiliare",
]


def _fold(col: str) -> str:
    """Lower-case, accents folded, dots dropped (S.r.l. = srl), the rest as one space."""
    return (f"trim(regexp_replace(replace(lower(strip_accents({col})), '.', ''), "
            f"'[^a-z0-9]+', ' ', 'g'))")


def name_key_sql(col: str) -> str:
    """SQL for the legal-name match key: folded, trailing legal forms removed, no spaces.

    "Rossi Costruzioni S.r.l.", "ROSSI COSTRUZIONI SRL" and "Rossi-Costruzioni srl" all
    give ``rossicostruzioni``; "Kowalski Sp. z o.o." gives ``kowalski``.
    """
    forms = "|".join(f.replace(" ", "\\s") for f in LEGAL_FORMS)
    # the forms may repeat ("S.r.l. unipersonale", "Rossi & C. S.a.s.")
    stripped = f"regexp_replace(' ' || {_fold(col)}, '(\\s({forms}))+$', '')"
    return f"nullif(replace({stripped}, ' ', ''), '')"


def spaced_name_key_sql(col: str) -> str:
    """The name key with its spaces, to compare with the generic names list."""
    forms = "|".join(f.replace(" ", "\\s") for f in LEGAL_FORMS)
    return f"trim(regexp_replace(' ' || {_fold(col)}, '(\\s({forms}))+$', ''))"


def city_key_sql(col: str) -> str:
    return f"nullif({_fold(col)}, '')"


def staging_keys_sql(entity: str) -> str:
    """Extra columns of the B2B staging tables: the match keys, computed once."""
    if entity in ("company", "potential_company"):
        generic = "[" + ", ".join(f"'{g}'" for g in GENERIC_NAMES) + "]"
        return (f", {vat_key_sql('vat_number')} AS vat_key, {name_key_sql('legal_name')} AS name_key, "
                f"{city_key_sql('city')} AS city_key, "
                f"(list_contains({generic}, {spaced_name_key_sql('legal_name')}) "
                f"OR length(coalesce({name_key_sql('legal_name')}, '')) < 4) AS generic_name, "
                "nullif(lower(trim(email)), '') AS email_key")
    if entity == "company_user":
        return (f", {vat_key_sql('company_vat')} AS company_vat_key, "
                f"{name_key_sql('company_name')} AS company_name_key, "
                "nullif(lower(trim(email)), '') AS email_key")
    return ""
