"""What the platform tells clients about its models: their state (model-status) and their catalog entries."""

from .entries import CatalogQuery, catalog_entries, catalog_entry, one_entry, status_entry

__all__ = ["CatalogQuery", "catalog_entries", "catalog_entry", "one_entry", "status_entry"]
