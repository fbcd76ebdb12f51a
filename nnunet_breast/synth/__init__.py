"""Synthetic thorax phantoms written as a treatment planning system exports them."""
