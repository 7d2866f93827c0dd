"""REST gateway: translates HTTP/JSON to the gRPC services and serves the web page."""
