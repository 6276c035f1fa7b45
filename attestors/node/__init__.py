"""Node attestors: each has an agent half (build evidence) and a server half (check it)."""
