"""The SQL pull source (MariaDB/MySQL, PostgreSQL, SQLite): dialects and the incremental
query loop (source). It imports the source SDK and pipelines.core.
"""
