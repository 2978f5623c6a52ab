"""The registered op a tapped decoder layer calls: `torch.ops.driftcheck.tap_rows`.

Kept in its own module without `from __future__ import annotations`:
torch.library reads the real annotation objects to infer the op schema.
Importing this module imports torch; only the shims' install path does.
"""

import torch


@torch.library.custom_op("driftcheck::tap_rows", mutates_args=("buf", "stamp"))
def tap_rows(hidden: torch.Tensor, residual: torch.Tensor, buf: torch.Tensor, stamp: torch.Tensor) -> None:
    """Write this forward's rows of the residual stream (hidden + residual, the layer's two outputs) into the
    persistent buffer, summed straight into it (one kernel, no intermediate tensor); count the write."""
    n = min(hidden.shape[0], buf.shape[0])
    torch.add(hidden[:n], residual[:n], out=buf[:n])
    stamp.add_(1)


@tap_rows.register_fake
def _tap_rows_fake(hidden: torch.Tensor, residual: torch.Tensor, buf: torch.Tensor, stamp: torch.Tensor) -> None:
    return None
