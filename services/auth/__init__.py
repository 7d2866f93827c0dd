"""Auth service: users, passwords, and the signed access tokens every other service verifies."""
