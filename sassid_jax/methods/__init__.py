"""Methods: what each training stage learns from (losses, teachers), one module per method.

- `stages`: a training stage as data: learners, losses, frozen teachers; the stage losses table.
- `sasl`: SASL (Li et al., CVPR 2023): the flatness map alpha and the BNN, LAN and U-Net losses.
- `atbsn`: AT-BSN (Chen et al., CVPR 2024): the teacher at several blind sizes, distillation loss.
- `apbsn`: AP-BSN (Lee et al., CVPR 2022): the PD-wrapped forward, R3, the test-time procedure.
- `tbsn`: TBSN (Li et al., AAAI 2025): the PD-5 training input, PD 2 on the batch axis, R3.
"""
