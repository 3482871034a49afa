"""CLI sub-command groups; each module defines ``register(subparsers)``."""
