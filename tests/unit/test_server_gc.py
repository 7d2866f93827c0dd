"""What a service does to the garbage collector once started (services.common.server.freeze_start_up_objects)."""

import gc

from services.common.server import YOUNG_COLLECTION_THRESHOLD, freeze_start_up_objects


def test_start_up_objects_are_frozen_and_young_collections_wait_for_more_objects():
    threshold = gc.get_threshold()
    try:
        freeze_start_up_objects()
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold() == (YOUNG_COLLECTION_THRESHOLD, *threshold[1:])
        assert threshold[0] < YOUNG_COLLECTION_THRESHOLD
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)
