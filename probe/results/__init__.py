"""Results: the record and its schema, writing and reading results files, privacy, `probe show`."""
