"""Metering: per tenant and day, what the platform did for it (SVIDs, agents, API calls)."""
