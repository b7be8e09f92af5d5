"""skybatch's own state database: SQLAlchemy models and Alembic migrations."""
