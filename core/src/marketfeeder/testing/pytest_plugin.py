"""pytest plugin registered by the core (entry point ``pytest11``); kept import-light."""
