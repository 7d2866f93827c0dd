"""Free TCP ports for tests: servers bind port 0 themselves; these are for addresses that must be known first."""

import socket


def free_port() -> int:
    """A port nothing listens on (e.g. for a service that is down), free at the moment of asking."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
