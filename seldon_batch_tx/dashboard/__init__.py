"""What a person watches: the web dashboard, Prometheus metrics, the batch registry, stderr progress."""
