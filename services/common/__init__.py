"""Plumbing shared by every service: settings, logging, server bootstrap, interceptors, channels, tokens."""
