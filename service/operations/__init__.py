"""Operating the service: Prometheus metrics and JSON log lines."""
