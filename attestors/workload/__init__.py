"""Workload attestors: what the kernel says about the process calling the Workload API."""
