"""The database every overlay runs can create the catalog's migrations' extensions."""

import re

import pytest

from tests.deploy.manifests import OVERLAYS, REPO, render_overlay, workloads


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_postgres_ships_pgvector_pinned_by_digest(overlay):
    migrations = " ".join(p.read_text() for p in (REPO / "services" / "catalog" / "migrations").glob("*.sql"))
    assert "CREATE EXTENSION IF NOT EXISTS vector" in migrations
    images = [c["image"] for w in workloads(render_overlay(overlay)) for c in w.containers() if w.name == "postgres"]
    assert images, f"the {overlay} overlay runs postgres"
    for image in images:
        assert re.fullmatch(r"pgvector/pgvector:[\w.-]+@sha256:[0-9a-f]{64}", image), image
