"""PyTorch peers of :mod:`lmref.motion`: a backward flow through ``grid_sample``.

The flow ``(dx, dy)`` becomes a ``grid_sample`` grid of normalised *source* positions with
``align_corners=True``: ``grid[..., 0] = 2 (x + dx) / (W - 1) - 1``, ``grid[..., 1] =
2 (y + dy) / (H - 1) - 1`` (needs ``H, W >= 2``). ``boundary`` maps to ``padding_mode``
(``"zeros"``, ``"border"``); ``"wrap"`` has no ``grid_sample`` mode and is emulated exactly:
the position is reduced modulo the size and the frame is extended by one wrapped row and
column, so the cell ``[size - 1, size]`` reads pixel 0. Nearest mode rounds ties half to even
in ``grid_sample`` (lmref rounds half up): compare away from exact ties.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["warp", "flow_to_grid"]


def _pixel_grid(flow):
    H, W = flow.shape[-3], flow.shape[-2]
    ys = torch.arange(H, dtype=flow.dtype, device=flow.device).view(H, 1)
    xs = torch.arange(W, dtype=flow.dtype, device=flow.device).view(1, W)
    return xs + flow[..., 0], ys + flow[..., 1]


def _normalise(px, py, W, H):
    """Pixel positions -> grid_sample's [-1, 1] coordinates (align_corners=True)."""
    return torch.stack([2.0 * px / (W - 1) - 1.0, 2.0 * py / (H - 1) - 1.0], dim=-1)


def flow_to_grid(flow):
    """(N, H, W, 2) or (H, W, 2) backward flow -> grid_sample grid (align_corners=True)."""
    px, py = _pixel_grid(flow)
    return _normalise(px, py, flow.shape[-2], flow.shape[-3])


def warp(x, flow, mode="bilinear", boundary="zeros"):
    """``lmref.motion.warp`` through ``torch.nn.functional.grid_sample`` (differentiable)."""
    shape = x.shape
    x4 = x.reshape((1,) * (4 - x.dim()) + tuple(shape))
    N, C, H, W = x4.shape
    f4 = flow.reshape((1,) * (4 - flow.dim()) + tuple(flow.shape)).expand(N, H, W, 2)
    px, py = _pixel_grid(f4)
    if boundary == "wrap":
        px, py = torch.remainder(px, W), torch.remainder(py, H)
        x4 = torch.cat([x4, x4[:, :, :1]], dim=2)
        x4 = torch.cat([x4, x4[:, :, :, :1]], dim=3)
        grid = _normalise(px, py, W + 1, H + 1)
        padding_mode = "border"  # positions are already inside [0, size]
    else:
        grid = _normalise(px, py, W, H)
        padding_mode = boundary
    out = F.grid_sample(x4, grid, mode=mode, padding_mode=padding_mode, align_corners=True)
    return out.reshape(shape)
