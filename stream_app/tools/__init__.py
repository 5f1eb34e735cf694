"""Tools around the engine: replay, the synthetic feed, the demo, the local broker, topics."""
