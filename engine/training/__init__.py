"""Training: one planned run built into a jitted step (optimizer, masks, data, sharding) and trained
in one readable loop with Orbax checkpoints."""
