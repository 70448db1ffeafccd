"""Loaders: what analysis judges with (trust stores, catalogs, AS tables), read from disk."""
