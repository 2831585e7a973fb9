"""Code shared by the gateway and the services: wire models, subjects, config, NATS glue."""

__version__ = "0.1.0"
