"""A clock tests move by hand, for code that takes a `clock` (e.g. `TokenVerifier`): time passes at once."""


class FakeClock:
    """Callable like `time.monotonic` or `time.time`; it stands still until `advance` moves it."""

    def __init__(self, start: float = 1_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
