"""The storage core: tiers, partitions, routing, tags, bytes, failure policy and stores.

It knows nothing of the features built on it (models, warming, statistics, hot
keys); they attach through the observers and hooks the core offers.
"""
