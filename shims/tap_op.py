"""The registered op a tapped decoder layer calls: `torch.ops.driftcheck.tap_rows`.

Kept in its own module without `from __future__ import annotations`:
torch.library reads the real annotation objects to infer the op schema.
Importing this module imports torch; only the shims' install path does.
"""

import torch


@torch.library.custom_op("driftcheck::tap_rows", mutates_args=("buf", "stamp"))
def tap_rows(x: torch.Tensor, buf: torch.Tensor, stamp: torch.Tensor) -> None:
    """Copy this forward's rows of the residual stream into the persistent buffer; count the write."""
    n = min(x.shape[0], buf.shape[0])
    buf[:n].copy_(x[:n])
    stamp.add_(1)


@tap_rows.register_fake
def _tap_rows_fake(x: torch.Tensor, buf: torch.Tensor, stamp: torch.Tensor) -> None:
    return None
