"""One router per resource: related lists, health/introspection, admin."""
