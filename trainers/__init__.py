"""nnU-Net trainers of this package.

The classes live here, in the installed package, so that nnU-Net's spawn-based worker pools can pickle
them. nnU-Net finds them through the ``nnUNet_extTrainer`` folder, which only re-exports these names
(``nnunet_breast/ext_trainers``; ``nnunet-breast env`` prints the export line). Every ``nnUNetTrainer*``
class defined in ``effnet.py``, ``clips.py`` and ``tiny.py`` is exported.
"""
from nnunet_breast.trainers import clips, effnet, tiny


def _trainers(module) -> dict[str, type]:
    return {name: obj for name, obj in vars(module).items()
            if name.startswith("nnUNetTrainer") and isinstance(obj, type) and obj.__module__ == module.__name__}


_EXPORTED = {**_trainers(tiny), **_trainers(effnet), **_trainers(clips)}
globals().update(_EXPORTED)
__all__ = sorted(_EXPORTED)
