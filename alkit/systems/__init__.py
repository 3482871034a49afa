"""Chemical-system specific structure and scenario builders (one module per system)."""
