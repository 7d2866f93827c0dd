"""The whole system on one machine: embedded PostgreSQL, a local blob directory and every service as a subprocess."""
