"""The public index of due federation refreshes: which relationship of which tenant, and when."""
