"""A starting point for marketfeeder plugins."""
