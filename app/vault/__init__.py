"""Encrypted provider keys added at run time (shared pool and bring-your-own-key)."""
