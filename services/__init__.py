"""Tagsmith services: one sub-package per service, plus shared plumbing in `common`."""
