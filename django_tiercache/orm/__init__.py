"""The model layer: registered models, their invalidation, cache-aside reads, the witness."""
