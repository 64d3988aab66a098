"""All I/O of the operator: Kubernetes, Prometheus, clock. Library errors become ours here."""
