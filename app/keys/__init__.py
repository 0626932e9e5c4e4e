"""Pure key-pool logic: states, selection strategies, cooldowns, breakers and health math.

Nothing here performs I/O or reads a clock: callers pass `now` (unix seconds) and an RNG.
"""
