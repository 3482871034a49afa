"""The recipes shipped with alkit (package data: loaded by path through :mod:`alkit.recipe`, never imported as
modules of this package, so a recipe is an ordinary script a user can copy and edit)."""
