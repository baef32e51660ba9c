"""The front doors: REST gateway and MCP server, and the backends they submit jobs through (Kafka, in-process)."""
