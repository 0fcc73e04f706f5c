"""Stores: where batches of load events are committed with their file checkpoints."""

from lmod_tracker.store.base import (
    SCHEMA_VERSION,
    Batch,
    CommitResult,
    SchemaError,
    Store,
    StoreError,
)

__all__ = ["SCHEMA_VERSION", "Batch", "CommitResult", "SchemaError", "Store", "StoreError"]
