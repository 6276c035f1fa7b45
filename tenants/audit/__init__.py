"""The tamper-evident audit trail: one SHA-256 hash chain a tenant (and one for the platform)."""
