"""The service around the render path: CLI, Kafka worker, storage, metrics, gateways."""
