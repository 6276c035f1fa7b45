"""SPIRE-style commands of the `hallmark` CLI (entry, token, agent, bundle, federation,
localauthority, login, logout): a plain HTTP client of the REST API that imports no Django."""

from config.spirecli.main import GROUPS, main

__all__ = ["GROUPS", "main"]
