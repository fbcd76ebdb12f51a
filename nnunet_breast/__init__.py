"""nnU-Net v2 plugin for breast-cancer radiotherapy CT (contours + surgical clips)."""
__version__ = "0.1.0"
