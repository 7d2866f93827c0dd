"""Faces in the catalog: stored with the upload, searchable as tags, filled in for old images by reclassification.

Real parts throughout: the model server serving both models, inference, the catalog and PostgreSQL.
"""

import pytest
from tagsmith.catalog.v1 import catalog_pb2

from tests.integration.test_inference_faces import ASTRONAUT_FACE_CENTRE, centre
from tests.support.catalog_fixtures import ScriptedInference
from tests.support.images import group_photo, sample_image, sideways

PEOPLE_TAGS = {"person", "people", "portrait", "group"}


@pytest.fixture
async def start_catalog(catalog_server, inference_server):
    async def start(**inference_settings):
        inference = await inference_server(**inference_settings)
        return await catalog_server(inference_addr=f"127.0.0.1:{inference.port}", inference_timeout_seconds=30)

    return start


async def search(client, query: str) -> set[str]:
    found = await client.SearchImages(catalog_pb2.SearchImagesRequest(query=query))
    return {image.uid for image in found.images}


async def test_faces_are_stored_tagged_and_searchable(start_catalog, test_keys):
    alice = (await start_catalog()).client(test_keys.token("alice"))
    portrait = await alice.upload(sample_image("astronaut"), "astronaut.jpg")
    cat = await alice.upload(sample_image("chelsea"), "cat.jpg")
    group = await alice.upload(group_photo(), "two.jpg")

    stored = await alice.GetImage(catalog_pb2.GetImageRequest(uid=portrait.uid))
    assert stored.faces_analysed and stored.face_model_version == "1"
    (face,) = stored.faces
    x, y = centre(face)
    assert abs(x - ASTRONAUT_FACE_CENTRE[0]) < 0.05 and abs(y - ASTRONAUT_FACE_CENTRE[1]) < 0.05
    assert {"person", "people", "portrait"} <= set(stored.tags)
    assert stored.category == stored.labels[0].label, "the category stays the classifier's"

    cat_stored = await alice.GetImage(catalog_pb2.GetImageRequest(uid=cat.uid))
    assert cat_stored.faces_analysed and not cat_stored.faces and not PEOPLE_TAGS & set(cat_stored.tags)
    assert {"person", "people", "group"} <= set(group.tags) and len(group.faces) == 2

    assert await search(alice, "person") == {portrait.uid, group.uid}
    assert await search(alice, "portrait") == {portrait.uid}
    assert await search(alice, "group") == {group.uid}
    bob = (await start_catalog()).client(test_keys.token("bob"))
    assert await search(bob, "person") == set(), "faces are found only in one's own images"


async def test_sideways_portrait_is_stored_with_its_box_upright(start_catalog, test_keys):
    alice = (await start_catalog()).client(test_keys.token("alice"))
    image = await alice.upload(sideways(sample_image("astronaut")), "IMG_0001.jpg")
    assert image.orientation == 6
    (face,) = image.faces
    x, y = centre(face)
    assert abs(x - ASTRONAUT_FACE_CENTRE[0]) < 0.05 and abs(y - ASTRONAUT_FACE_CENTRE[1]) < 0.05


async def test_reclassification_adds_faces_when_the_detector_changes(start_catalog, test_keys):
    before = await start_catalog(face_model_name="")
    alice = before.client(test_keys.token("alice"))
    old = await alice.upload(sample_image("astronaut"), "old.jpg")
    assert not old.faces_analysed and not old.faces and "person" not in old.tags

    after = await start_catalog()
    admin = after.client(test_keys.token("root", roles=("admin",)))
    done = await admin.Reclassify(catalog_pb2.ReclassifyRequest())
    assert (done.reclassified, done.remaining) == (1, 0)
    again = await admin.Reclassify(catalog_pb2.ReclassifyRequest())
    assert again.reclassified == 0, "the same detector version does not run again"

    alice = after.client(test_keys.token("alice"))
    updated = await alice.GetImage(catalog_pb2.GetImageRequest(uid=old.uid))
    assert updated.faces_analysed and updated.face_model_version == "1" and len(updated.faces) == 1
    assert await search(alice, "portrait") == {old.uid}


async def test_an_unavailable_detector_keeps_the_faces_already_found(start_catalog, test_keys):
    alice = (await start_catalog()).client(test_keys.token("alice"))
    image = await alice.upload(sample_image("astronaut"), "a.jpg")
    later = await start_catalog(face_model_name="no_such_detector")
    admin = later.client(test_keys.token("root", roles=("admin",)))
    # Served: the same classifier and no detector version, so nothing is outdated.
    assert (await admin.Reclassify(catalog_pb2.ReclassifyRequest())).reclassified == 0
    kept = await alice.GetImage(catalog_pb2.GetImageRequest(uid=image.uid))
    assert kept.faces_analysed and len(kept.faces) == 1


async def test_relabelling_without_faces_keeps_the_faces_and_their_tags(
    start_catalog, catalog_server, scripted_inference, test_keys
):
    alice = (await start_catalog()).client(test_keys.token("alice"))
    photo = sample_image("astronaut")
    image = await alice.upload(photo, "a.jpg")
    # A new classifier whose answers carry no faces (as when the detector is unavailable).
    classifier, address = await scripted_inference(servicer=ScriptedInference(model_version="2"))
    classifier.script(photo, [("bobsled", 0.5)], ["bobsled"])
    admin = (await catalog_server(inference_addr=address)).client(test_keys.token("root", roles=("admin",)))
    assert (await admin.Reclassify(catalog_pb2.ReclassifyRequest())).reclassified == 1
    relabelled = await alice.GetImage(catalog_pb2.GetImageRequest(uid=image.uid))
    assert (relabelled.model_version, relabelled.category) == ("2", "bobsled")
    assert relabelled.faces_analysed and len(relabelled.faces) == 1
    assert {"bobsled", "person", "people", "portrait"} <= set(relabelled.tags)
    assert await search(alice, "portrait") == {image.uid}
