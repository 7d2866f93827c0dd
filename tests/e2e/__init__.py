"""End-to-end tests: the whole system through the gateway, over HTTP and in a real browser."""
