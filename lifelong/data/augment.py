"""Data augmentation applied by the training loop to each training batch, on the run's device.

Only what a protocol of the library needs: random translation by whole pixels (the "jitter" of
Hinton et al. 2012, "Improving neural networks by preventing co-adaptation of feature
detectors", and of the MNIST teacher of Hinton, Vinyals & Dean 2015, Sec. 3: inputs "jittered by
up to two pixels in any direction"). Vectorised over the batch (one gather, no loop over
samples); the shifts are drawn from the run's generator, so a run stays reproducible from its
seed and a resumed run draws the same shifts. Evaluation data is never augmented.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["random_translate", "translate"]


def translate(x: Tensor, dy: Tensor, dx: Tensor, max_shift: int) -> Tensor:
    """Shifts every image of ``x`` by its own whole number of pixels, filling with zeros.

    ``out[n, c, i, j] = x[n, c, i - dy[n], j - dx[n]]`` (0 outside the image): a positive ``dy``
    moves the content down, a positive ``dx`` to the right.

    Args:
        x: Images ``[B, C, H, W]``.
        dy: Vertical shift of each image, integers ``[B]`` with ``|dy| <= max_shift``.
        dx: Horizontal shift of each image, integers ``[B]`` with ``|dx| <= max_shift``.
        max_shift: Bound of the shifts (the zero padding added before the gather).

    Returns:
        The shifted images, same shape and dtype as ``x``.
    """
    if x.dim() != 4:
        raise ValueError(f"translation needs images [B, C, H, W], got shape {list(x.shape)}")
    b, _, h, w = x.shape
    m = int(max_shift)
    padded = F.pad(x, (m, m, m, m))
    dev = x.device
    rows = torch.arange(h, device=dev)[None, :] + m - dy.to(dev)[:, None]  # [B, H]
    cols = torch.arange(w, device=dev)[None, :] + m - dx.to(dev)[:, None]  # [B, W]
    n = torch.arange(b, device=dev)[:, None, None]
    # advanced indices on dims 0, 2, 3 (separated by the channel slice) put them first:
    # [B, H, W, C]
    out = padded[n, :, rows[:, :, None], cols[:, None, :]]
    return out.permute(0, 3, 1, 2)


def random_translate(x: Tensor, max_shift: int, generator: torch.Generator | None = None
                     ) -> Tensor:
    """Shifts each image of ``x`` by an independent random ``(dy, dx)``, each drawn uniformly
    from the integers ``-max_shift .. max_shift`` (zero fill): the ``train.jitter`` option.

    The shifts are drawn on ``generator``'s device (the loop passes its CPU generator, so the
    draws are the same on any device) and the images are shifted where they are.

    Args:
        x: Images ``[B, C, H, W]``.
        max_shift: Largest shift in pixels along each axis (``0`` returns ``x`` unchanged).
        generator: Random generator (``None``: torch's default).
    """
    if max_shift < 0:
        raise ValueError(f"the jitter must be >= 0 pixels, got {max_shift}")
    if max_shift == 0:
        return x
    device = generator.device if generator is not None else torch.device("cpu")
    shifts = torch.randint(-max_shift, max_shift + 1, (2, x.shape[0]), generator=generator,
                           device=device)
    return translate(x, shifts[0], shifts[1], max_shift)
