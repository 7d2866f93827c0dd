"""Every SQL statement of the catalog, one module per concern, joined in CatalogStore over one connection pool.

Each statement is a module constant with named placeholders, rendered once at import (base.statement); only
listing and search compose theirs per call, from constant fragments, because their filters vary.
"""

from services.catalog.store.base import RemoveBytes
from services.catalog.store.browse import Browsing
from services.catalog.store.claims import Claims
from services.catalog.store.edits import Edits
from services.catalog.store.keyset import TakenFilter
from services.catalog.store.maintenance import Maintenance
from services.catalog.store.search import Search
from services.catalog.store.trash import Trash, epoch_micros
from services.catalog.store.uploads import Uploads

__all__ = ["CatalogStore", "RemoveBytes", "TakenFilter", "epoch_micros"]


class CatalogStore(Uploads, Claims, Browsing, Search, Edits, Trash, Maintenance):
    """Reads and writes images and their tags; owns the per-content lock that keeps shared bytes safe."""
