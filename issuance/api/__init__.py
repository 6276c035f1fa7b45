"""REST API of the issuance app: entries, join tokens and agents under /api/v1/."""
