"""Model fixtures live in tests/conftest.py (exports tests use them too)."""
