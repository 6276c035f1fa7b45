"""The Hallmark node agent: attests the node, keeps SVIDs, serves the SPIFFE Workload API."""
