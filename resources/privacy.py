"""Privacy settings: the deployment secret that keys the suppression ledger's hashes.

Bound with ``dg.EnvVar("TESSERA_SUPPRESSION_KEY")`` so that Dagster stores only the
variable's name, never the secret (RELIABILITY.md rule 10).
"""

import dagster as dg


class PrivacySettings(dg.ConfigurableResource):
    suppression_key: str
