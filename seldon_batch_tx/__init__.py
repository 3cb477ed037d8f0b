"""seldon-batch-tx: a Twisted batch processor for Seldon Core and Open Inference Protocol models."""

__version__ = "0.1.0"
