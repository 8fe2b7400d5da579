"""Privacy: the suppression ledger, erasure, consent, bounces and bulk edits."""
