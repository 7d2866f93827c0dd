"""Benchmarks: each module's run() measures one part of the system and returns its figures."""
