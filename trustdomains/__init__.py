"""Tenant trust domains: their X.509 authorities, key managers and bundles."""
