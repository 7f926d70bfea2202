"""Reusable widgets; each reports what the user did with a typed message."""
