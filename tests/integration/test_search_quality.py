"""Search quality on real photos through the real model, inference service and catalog: every query finds its
photo first, and no query returns a photo that does not show the thing."""

from tagsmith.catalog.v1 import catalog_pb2

from tests.support import search_quality


async def test_every_query_finds_its_photo_first_and_nothing_else(catalog_server, inference_server, test_keys):
    inference = await inference_server()
    catalog = await catalog_server(inference_addr=f"127.0.0.1:{inference.port}", inference_timeout_seconds=60)
    alice = catalog.client(test_keys.token("alice"))
    photo_of = {}
    for number, (name, data) in enumerate(search_quality.views()):
        image = await alice.upload(data, f"{number}-{name}.jpg")
        assert image.status == catalog_pb2.IMAGE_STATUS_CLASSIFIED, image.status_reason
        photo_of[image.uid] = name

    def search_at(min_score: float | None):
        async def search(query: str) -> list[str]:
            request = catalog_pb2.SearchImagesRequest(query=query, page_size=100, min_score=min_score)
            reply = await alice.SearchImages(request)
            return [image.uid for image in reply.images]

        return search

    # How the default threshold was chosen: the same set at other thresholds (printed with -s).
    for threshold in (0.0, 0.05, 0.1, 0.12, 0.15, 0.2):
        print(f"min_score {threshold}: {await search_quality.score(search_at(threshold), photo_of)}")
    score = await search_quality.score(search_at(None), photo_of)
    print(f"search quality at the default threshold: {score}")
    assert score.precision_at_1 == 1.0, str(score)
    assert score.recall == 1.0, str(score)
    assert score.wrong == 0, str(score)
