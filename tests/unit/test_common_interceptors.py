"""Which RPCs reach the INFO log: failures and slow calls, not every quick success."""

import logging

import pytest

from services.common.interceptors import SLOW_CALL_SECONDS, rpc_log_level


@pytest.mark.parametrize(
    ("code", "elapsed", "level"),
    [
        ("OK", 0.01, logging.DEBUG),
        ("OK", SLOW_CALL_SECONDS, logging.INFO),
        ("NOT_FOUND", 0.01, logging.INFO),
        ("UNAUTHENTICATED", 0.01, logging.INFO),
        ("INTERNAL", 0.01, logging.WARNING),
        ("DATA_LOSS", 0.01, logging.WARNING),
    ],
)
def test_log_level_of_an_rpc(code, elapsed, level):
    assert rpc_log_level(code, elapsed) == level
