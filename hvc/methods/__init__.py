"""Self-supervised correspondence methods trained by the harness (``hvc.train``)."""
