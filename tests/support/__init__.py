"""Helpers shared by the test suites (importable as ``support`` from any test module)."""
