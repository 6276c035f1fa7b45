"""Attestors: node attestors (agent half and server half) and workload attestors, no Django."""
