"""The original API's exact shapes, with tokens and in anonymous mode."""

from tests.unit.test_gateway_routes import PNG, sign_in


async def test_original_api_shapes(gateway):
    headers = await sign_in(gateway)
    assert (await gateway.get("/model")).json() == {
        "name": "efficientnet_lite0",
        "version": "1",
        "description": "fake model",
    }
    created = await gateway.post("/img", headers=headers, files={"image": ("cat.png", PNG, "image/png")})
    assert created.status_code == 200
    assert set(created.json()) == {"category", "uid"}
    uid = created.json()["uid"]
    assert (await gateway.get("/images", headers=headers)).json() == [{"uid": uid, "category": "tabby"}]
    assert (await gateway.get("/categories", headers=headers)).json() == {"tabby": "1"}
    for method in ("GET", "POST"):
        reply = await gateway.request(method, f"/img/{uid}", headers=headers)
        assert (reply.status_code, reply.content) == (200, PNG)


async def test_original_api_lists_every_page(gateway):
    headers = await sign_in(gateway)
    for index in range(105):
        await gateway.post("/img", headers=headers, files={"image": ("a.png", PNG + index.to_bytes(2), "image/png")})
    assert len((await gateway.get("/images", headers=headers)).json()) == 105


async def test_original_api_needs_a_token_unless_anonymous(gateway_factory):
    closed = await gateway_factory()
    assert (await closed.get("/images")).status_code == 401
    assert (await closed.get("/model")).status_code == 200


async def test_anonymous_mode_uses_one_shared_user(gateway_factory):
    gateway = await gateway_factory(anonymous_mode=True, anonymous_password="password123")
    await gateway.post("/v1/auth/register", json={"username": "anonymous", "password": "password123"})
    created = await gateway.post("/img", files={"image": ("cat.png", PNG, "image/png")})
    assert created.status_code == 200
    listed = (await gateway.get("/images")).json()
    assert listed == [{"uid": created.json()["uid"], "category": "tabby"}]
    assert (await gateway.get(f"/img/{created.json()['uid']}")).content == PNG
    assert (await gateway.get("/v1/images")).status_code == 401
    other = await sign_in(gateway, "ada")
    assert (await gateway.get("/images", headers=other)).json() == []
