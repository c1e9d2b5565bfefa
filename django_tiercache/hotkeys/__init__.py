"""Hot keys: a sampled record of the most read keys of a cache."""
