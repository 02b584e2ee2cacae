"""Profiles shipped with llamachat (TOML files, read with importlib.resources)."""
