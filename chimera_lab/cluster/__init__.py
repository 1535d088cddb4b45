"""Launchers: ways to get workers for a Manager (local processes now; Docker and remote machines later)."""

from .local import LocalCluster

__all__ = ["LocalCluster"]
