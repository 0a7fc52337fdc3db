"""Reporting: pictures and reports people look at (data maps, SOI distributions)."""
