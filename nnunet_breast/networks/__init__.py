"""Network architectures for nnunet_breast.

Each architecture lives in its own module and is located by nnU-Net through its import path in the plans
(``arch_class_name``), e.g. ``nnunet_breast.networks.efficientnet.EfficientNetUNet3d``. This package
initialiser deliberately imports nothing, so that the modules stay independent of each other and importing one
architecture never pulls in the others.
"""
