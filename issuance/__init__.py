"""Registration entries, join tokens, attested agents and the agent gRPC API (tenant schema)."""
