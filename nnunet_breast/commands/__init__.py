"""Subcommands of the nnunet-breast console script (one module each)."""
