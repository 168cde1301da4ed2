"""City-scale devices: the registry, per-device one-minute aggregates, alarm episodes with hysteresis,
lift e-bike repeat counters, and the keyed, persistable state that ties them together (see processor)."""
