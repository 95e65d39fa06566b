"""The hash-chained audit log: how entries are hashed and how a chain is verified."""
