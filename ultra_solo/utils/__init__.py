"""Helpers shared by ultra-solo's model families."""
