"""desbordante-ops: Invoke tasks taking the Desbordante service from source to a running stack."""

__version__ = "0.1.0"
