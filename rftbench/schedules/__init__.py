"""Built-in epsilon schedules, one file each (the plugin files of :mod:`rftbench.scheduling`).

Every module here is loaded by the registry."""
