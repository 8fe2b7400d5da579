"""Data contracts: the canonical shape of each entity and of each published table.

Entity contracts (``data_contracts/entities/*.yaml``) say what a source must deliver
after its column mapping: types, required fields, formats, allowed values. They are
enforced at ingestion, per field but in set-based SQL (see ``tessera.ingest.load``).
Published-table contracts (``data_contracts/published/*.yaml``) list the columns that
downstream tools rely on; asset checks compare the warehouse against them so that a
rename shows up as a failed check, not as a broken export at a customer.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from tessera.yamlfile import ConfigError, load_yaml

CONTRACTS_DIR = Path(__file__).resolve().parents[1] / "data_contracts"

FieldType = Literal["string", "integer", "decimal", "date", "timestamp", "boolean"]
FieldFormat = Literal["email", "phone", "country", "vat"]

# DuckDB type for each contract type; decimals are fixed point so that sums of
# money are exact.
SQL_TYPES: dict[str, str] = {
    "string": "VARCHAR",
    "integer": "BIGINT",
    "decimal": "DECIMAL(18,2)",
    "date": "DATE",
    "timestamp": "TIMESTAMP",
    "boolean": "BOOLEAN",
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FieldSpec(_Strict):
    type: FieldType = "string"
    required: bool = False
    format: FieldFormat | None = None
    allowed: list[str] | None = None
    # Labels accepted and replaced by their code before validation (tessera.ingest.lookups).
    # country / province: ISO 3166 (tessera.ingest.lookups); "<table>.macro" / "<table>.micro":
    # a settings table of the deployment (lookups.yaml), with ``parent`` naming the
    # field that holds the micro's macro.
    lookup: str | None = None
    parent: str | None = None
    description: str = ""


class EntityContract(_Strict):
    entity: str
    description: str = ""
    key: str = "source_record_id"
    fields: dict[str, FieldSpec]


class PublishedColumn(_Strict):
    name: str
    type: str
    description: str = ""


class PublishedContract(_Strict):
    table: str
    description: str = ""
    key: list[str] = []
    columns: list[PublishedColumn]


def _parse(model, path: Path):
    loaded = load_yaml(path)
    try:
        return model.model_validate(loaded.data)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise ConfigError(f"{loaded.where(err['loc'])}: {err['msg']}") from None


@lru_cache(maxsize=None)
def entity_contracts(contracts_dir: str | None = None) -> dict[str, EntityContract]:
    base = Path(contracts_dir) if contracts_dir else CONTRACTS_DIR
    out: dict[str, EntityContract] = {}
    for path in sorted((base / "entities").glob("*.yaml")):
        contract = _parse(EntityContract, path)
        out[contract.entity] = contract
    return out


@lru_cache(maxsize=None)
def published_contracts(contracts_dir: str | None = None) -> dict[str, PublishedContract]:
    base = Path(contracts_dir) if contracts_dir else CONTRACTS_DIR
    out: dict[str, PublishedContract] = {}
    for path in sorted((base / "published").glob("*.yaml")):
        contract = _parse(PublishedContract, path)
        out[contract.table] = contract
    return out
