"""The model layer: registered models, their tags, invalidation on writes, cache-aside reads,
and the database witness of missed invalidations."""
