"""stream-app: a streaming usage processor for IoT SIM cards."""

__version__ = "0.1.0"
