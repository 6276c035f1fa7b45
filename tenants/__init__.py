"""Public schema: tenants, users and memberships, API tokens, signup and the platform audit."""
