"""Models and their deployments, from configuration and built-in defaults."""

from .catalog import Catalog, Deployment, Model, build_catalog

__all__ = ["Catalog", "Deployment", "Model", "build_catalog"]
