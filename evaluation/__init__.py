"""Metrics, tables, comparisons and dosimetry."""
