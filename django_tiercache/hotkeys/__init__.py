"""Hot keys: a sampled record of the most read keys of a cache (record.py).

The record watches reads as an observer (storage/observers.py); rewarming the
keys it names is warming's business (warming/hot.py).
"""
