"""The e4m3 format the fp8 kernels and layers share: the dtype, its largest value, the amax floor,
and the (values, row scales) pair that the quantizers return and the GEMMs take."""
from __future__ import annotations

from typing import NamedTuple

import torch

FP8 = torch.float8_e4m3fn
FP8_MAX = torch.finfo(FP8).max  # 448
MIN_AMAX = 1e-12  # an all-zero row gets a tiny scale instead of a division by zero


class Fp8Rows(NamedTuple):
    """Activations ready for an fp8 GEMM: row i is q[i] * scale[i]."""
    q: torch.Tensor  # [M, K] e4m3
    scale: torch.Tensor  # [M, 1] float32
