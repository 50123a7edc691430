"""Portal pages of the keys app, one module per page family (docs/architecture.md, "Apps and packages")."""
