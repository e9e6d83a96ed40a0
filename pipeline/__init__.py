"""The Keystone-style event pipeline: JetStream consumer -> DuckDB + Parquet, views, read API."""
