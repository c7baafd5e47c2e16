"""Generic training machinery: configs, the loop, checkpoints, EMA, RNG state, logs, pictures."""
