"""Planned maintenance with the owners' consent: Fenix-compatible sessions that ask the
owners, drain each host as they agreed, maintain it and return it (docs/maintenance.md)."""
