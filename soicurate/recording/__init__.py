"""Recording: the dynamics log format (manifest + one Parquet file per epoch and rank), its
writer, and adapters that turn other tools' logs into it."""
