"""The SPIFFE Workload API served by the agent on a Unix socket."""
