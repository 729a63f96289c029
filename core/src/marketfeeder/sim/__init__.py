"""Loopback exchange simulator: a seeded market served through each venue plugin's wire codec."""
