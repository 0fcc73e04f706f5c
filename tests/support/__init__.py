"""Test support: log line generator (loggen), fault-injecting TCP proxy (proxy) and real
SQLite/MariaDB databases (databases)."""
