"""Contract test suites for connectors and sinks, for this repository and for third-party plugins."""
