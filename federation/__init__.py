"""Federation with other trust domains (issue to come): relationships and the bundle endpoint."""
