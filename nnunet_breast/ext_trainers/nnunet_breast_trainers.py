"""The nnUNet_extTrainer entry point of nnunet_breast.

nnU-Net imports the top-level modules of this folder by bare name and drops them from sys.modules after
each lookup, so nothing may be *defined* here: the trainer classes are imported from the installed
``nnunet_breast.trainers`` package, where they stay importable (and picklable) under their real path.
"""
from nnunet_breast.trainers import *  # noqa: F401,F403
