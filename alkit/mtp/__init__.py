"""Moment tensor potentials: level definitions (:mod:`.levels`), fitting (:mod:`.fit`), extrapolation grade
(:mod:`.grade`) and MD with gamma monitoring (:mod:`.md`)."""
