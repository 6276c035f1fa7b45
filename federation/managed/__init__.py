"""Managed federation between tenants of the platform (public schema: it spans two tenants)."""
