"""The service's routers, one per resource (seed step 2)."""
