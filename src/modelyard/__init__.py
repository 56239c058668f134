"""Modelyard: a self-hosted AI inference platform speaking the APIs clients already use."""

__version__ = "0.1.0"
