"""The data-plane API: endpoints, OpenAPI description, rate limit (docs/architecture.md, "The data-plane API")."""
