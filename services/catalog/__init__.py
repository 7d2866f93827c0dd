"""Catalog service: stores images, their labels and tags, and answers listing, search and counts."""
