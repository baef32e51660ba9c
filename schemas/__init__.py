"""Versioned JSON Schemas of the events on the wire, with example payloads."""
