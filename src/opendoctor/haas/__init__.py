"""HA as a service: clusters of nodes kept available by their policies (docs/haas.md)."""
