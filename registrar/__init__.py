"""hallmark-registrar: registers a Kubernetes cluster's pods as Hallmark entries.

It runs in the customer's cluster, reads Pods, Namespaces and ClusterSPIFFEID resources from
the Kubernetes API (list + watch) and keeps the tenant's entries in step through Hallmark's
REST batch API with an API token scoped as a registrar. No Django here: it is plain Python.
"""
