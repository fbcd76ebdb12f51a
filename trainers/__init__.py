"""nnU-Net trainers of this package, split by concern as nnU-Net's ``variants/`` are.

``effnet.py`` and ``clips.py`` hold the roles (network, recipe), ``variants.py`` their named schedule/width
variants, ``baseline.py`` vanilla nnU-Net for comparisons; ``schedules.py``, ``transforms.py`` and
``lr_schedule.py`` the pieces they are made of.

The classes live here, in the installed package, so that nnU-Net's spawn-based worker pools can pickle
them. nnU-Net finds them through the ``nnUNet_extTrainer`` folder, which only re-exports these names
(``nnunet_breast/ext_trainers``; ``nnunet-breast env`` prints the export line). Every ``nnUNetTrainer*``
class defined in the modules below is exported.
"""
from nnunet_breast.trainers import baseline, clips, effnet, variants


def _trainers(module) -> dict[str, type]:
    return {name: obj for name, obj in vars(module).items()
            if name.startswith("nnUNetTrainer") and isinstance(obj, type) and obj.__module__ == module.__name__}


_EXPORTED = {**_trainers(baseline), **_trainers(effnet), **_trainers(clips), **_trainers(variants)}
globals().update(_EXPORTED)
__all__ = sorted(_EXPORTED)
