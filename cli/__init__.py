"""The `avatar-renderer` console script and its subcommands: render, bench, demo, broker, submit, models."""
