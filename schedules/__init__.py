"""Built-in epsilon schedules, one file each. Every module here is loaded by the registry."""
