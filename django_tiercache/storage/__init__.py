"""The storage core's in-process parts: the L1 tier, its coherence channel,
single flight."""
