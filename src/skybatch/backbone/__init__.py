"""The Data Backbone: file catalog, endpoints (archive with tape tier, site caches),
verified transfers, staging, provenance and database-to-file export."""
