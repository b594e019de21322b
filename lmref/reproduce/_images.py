"""Built-in test images, generated deterministically (no download, no image package needed).

:func:`textured_image` imitates a natural photograph: a 1/f ("pink") amplitude spectrum with
random phases (the statistics of natural scenes), plus a few sharp-edged objects, scaled to
[0, 255]. :func:`moving_object_pair` is a two-frame "car passing" clip for block matching.
"""
from __future__ import annotations

import numpy as np


def textured_image(size: int, rng: np.random.Generator, *, objects: int = 6,
                   smooth: float = 1.5) -> np.ndarray:
    """A ``(size, size)`` float64 image in [0, 255] with natural-image-like texture.

    ``smooth`` (pixels) low-passes the 1/f spectrum with a Gaussian so that sub-pixel warps
    of the image are well defined (a real camera's optics do the same).
    """
    fy = np.fft.fftfreq(size)[:, None]
    fx = np.fft.rfftfreq(size)[None, :]
    f = np.hypot(fx, fy)
    f[0, 0] = 1.0
    amplitude = np.exp(-2 * (np.pi * smooth * f) ** 2) / f
    amplitude[0, 0] = 0.0
    phase = rng.uniform(0, 2 * np.pi, amplitude.shape)
    img = np.fft.irfft2(amplitude * np.exp(1j * phase), s=(size, size))
    img /= np.std(img)
    yy, xx = np.mgrid[0:size, 0:size]
    for _ in range(objects):  # sharp-edged objects: discs and boxes of random contrast
        cy, cx = rng.uniform(0.15, 0.85, 2) * size
        r = rng.uniform(0.05, 0.14) * size
        inside = (np.hypot(yy - cy, xx - cx) < r if rng.random() < 0.5 else
                  (np.abs(yy - cy) < r) & (np.abs(xx - cx) < 0.7 * r))
        img = np.where(inside, img + rng.choice([-1.0, 1.0]) * rng.uniform(1.5, 3.0), img)
    img = _gaussian_blur(img, 0.7)  # anti-alias the object edges
    return 255.0 * (img - img.min()) / (img.max() - img.min())


def moving_object_pair(size: int, shift: tuple[int, int], rng: np.random.Generator,
                       *, object_frac: float = 0.4):
    """Two frames: a textured object moving by ``shift = (dx, dy)`` pixels over a still background.

    Returns ``(reference, current, true_flow, object_mask)``; ``true_flow`` follows the
    lmref.motion convention (backward map: ``current[y, x] = reference[y + dy, x + dx]``),
    so it is ``-shift`` on the object in the current frame and 0 elsewhere.
    """
    background = textured_image(size, rng, objects=4)
    texture = 0.6 * textured_image(size, rng, objects=0, smooth=1.0) + 60.0
    oh, ow = int(object_frac * size * 0.6), int(object_frac * size)
    y0, x0 = (size - oh) // 2, (size - ow) // 2
    dx, dy = shift
    patch = texture[:oh, :ow]

    def frame(oy, ox):
        img = background.copy()
        img[oy:oy + oh, ox:ox + ow] = patch
        mask = np.zeros((size, size), bool)
        mask[oy:oy + oh, ox:ox + ow] = True
        return img, mask

    reference, _ = frame(y0, x0)
    current, mask = frame(y0 + dy, x0 + dx)
    flow = np.zeros((size, size, 2))
    flow[mask] = (-dx, -dy)
    return reference, current, flow, mask


def _gaussian_blur(img: np.ndarray, sigma: float) -> np.ndarray:
    from scipy.ndimage import gaussian_filter
    return gaussian_filter(img, sigma, mode="reflect")
