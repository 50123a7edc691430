"""Everything that changes state, one module per entity (docs/architecture.md, "Apps and packages")."""
