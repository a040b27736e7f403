"""Methods: what each training stage learns from (losses, teachers), one module per method.

- `stages`: a training stage as data: learners, losses, frozen teachers; the stage losses table.
- `sasl`: SASL (Li et al., CVPR 2023): the flatness map alpha and the BNN, LAN and U-Net losses.
"""
