"""Plans, quotas and invoices (public schema)."""
