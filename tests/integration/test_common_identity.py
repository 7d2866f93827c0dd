"""A fixed account's token against the real auth service: one login, renewal before expiry, a new login when the
refresh token is refused, and failures that say which account and why (as the catalog and the gateway use it)."""

import logging

import grpc
import pytest

from services.common.channels import open_channel
from services.common.identity import RENEW_AT, LoginFailed, LoginTokenProvider
from services.gateway.errors import ApiError
from services.gateway.identity import anonymous_token
from tests.support.ports import free_port

ACCESS_TTL = 60


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_logs_in_once_and_renews_before_expiry(auth_harness):
    _, address = await auth_harness.start(access_token_ttl_seconds=ACCESS_TTL)
    account = await auth_harness.service_account(address, name="catalog-worker")
    clock = Clock()
    async with open_channel(address) as channel:
        tokens = LoginTokenProvider(channel, username=account.username, password=account.password, clock=clock)
        first = await tokens.token()
        clock.now += ACCESS_TTL * RENEW_AT - 0.5
        assert await tokens.token() == first, "kept while fresh"
        clock.now += 0.5
        renewed = await tokens.token()
        assert renewed and renewed != first, "renewed once most of its lifetime has passed, before it expires"
        tokens.invalidate()
        again = await tokens.token()
        assert again not in ("", renewed), "a token a backend refused is replaced at once"


async def test_logs_in_again_when_the_refresh_token_is_refused(auth_harness, caplog):
    _, address = await auth_harness.start(access_token_ttl_seconds=ACCESS_TTL)
    account = await auth_harness.service_account(address, name="catalog-worker")
    clock = Clock()
    async with open_channel(address) as channel:
        tokens = LoginTokenProvider(channel, username=account.username, password=account.password, clock=clock)
        first = await tokens.token()
        # Disabling ends every session of the account; enabled again, it may log in but its refresh token is gone.
        await auth_harness.set_disabled(address, account.username, True)
        await auth_harness.set_disabled(address, account.username, False)
        clock.now += ACCESS_TTL
        with caplog.at_level(logging.INFO, logger="services.common.identity"):
            renewed = await tokens.token()
    assert renewed and renewed != first
    assert "token refresh for 'catalog-worker' refused; logging in again" in caplog.messages


async def test_a_wrong_password_names_the_account_and_keeps_auths_answer(auth_server, auth_harness):
    _, address = auth_server
    account = await auth_harness.service_account(address, name="catalog-worker")
    async with open_channel(address) as channel:
        wrong = LoginTokenProvider(channel, username=account.username, password="not the password at all")
        with pytest.raises(LoginFailed, match="login as 'catalog-worker': UNAUTHENTICATED") as err:
            await wrong.token()
    assert err.value.error.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_auth_down_is_unavailable_within_the_call_timeout():
    async with open_channel(f"127.0.0.1:{free_port()}", retries=False) as channel:
        tokens = LoginTokenProvider(channel, username="catalog-worker", password="whatever", call_timeout=1.0)
        with pytest.raises(LoginFailed) as err:
            await tokens.token()
    assert err.value.error.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


async def test_the_gateway_answers_503_when_its_anonymous_login_is_refused(auth_server):
    _, address = auth_server
    async with open_channel(address) as channel:
        misconfigured = LoginTokenProvider(channel, username="anonymous", password="not the configured password")
        with pytest.raises(ApiError) as err:
            await anonymous_token(misconfigured)
    assert err.value.status == 503, "the gateway's own account is not the caller's fault"
