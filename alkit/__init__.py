"""alkit: robust moment tensor potentials with as few DFT calculations as possible.

Stages (each usable alone): :mod:`alkit.pool` (universal-potential MD), :mod:`alkit.encode` (M3GNet features),
:mod:`alkit.direct` (DIRECT sampling), :mod:`alkit.label` (DFT or stand-in labels), :mod:`alkit.mtp` (MTP fitting,
grading, MD), and :mod:`alkit.driver` (the active-learning loop).
"""
__version__ = "0.1.0"
