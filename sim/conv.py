"""2-D convolution: its geometry, the reference written as direct loops (the oracle), and its
lowering to GEMMs on the engine (:meth:`mxe.sim.driver.MXEDriver.conv2d`).

Layouts are TFLite's: the input ``x`` is NHWC ``(N, H, W, C)``, the weights ``w`` are
``(Cout, KH, KW, C / groups)``, the output NHWC ``(N, OH, OW, Cout)``. Padding is filled with
``pad_value`` (a quantized input's zero point, so that the padding is a real zero).
"""

from dataclasses import dataclass

import numpy as np


__all__ = ["ConvGeometry", "conv2d_reference", "patches", "lower_groups"]


def _pair(name, value):
    if isinstance(value, (int, np.integer)):
        return int(value), int(value)
    value = tuple(int(v) for v in value)
    if len(value) != 2:
        raise ValueError(f"{name} must be an integer or a pair, not {value!r}")
    return value


@dataclass(frozen=True)
class ConvGeometry:
    """Kernel, stride, padding, dilation and groups of a convolution.

    Parameters
    ----------
    kernel, stride, dilation : (int, int)
        Height and width.
    pads : (int, int, int, int)
        ONNX's order: top, left, bottom, right.
    groups : int
        Divides the input and output channels (``groups == C``: depthwise).
    """
    kernel: tuple
    stride: tuple = (1, 1)
    pads: tuple = (0, 0, 0, 0)
    dilation: tuple = (1, 1)
    groups: int = 1

    @classmethod
    def of(cls, kernel, *, stride=1, padding=0, dilation=1, groups=1):
        """From the forms a caller writes: an integer or a pair for ``kernel``, ``stride`` and
        ``dilation``; ``padding`` an integer, ``(pad_h, pad_w)`` or ``(top, left, bottom,
        right)``."""
        if isinstance(padding, (int, np.integer)):
            pads = (int(padding),) * 4
        else:
            padding = tuple(int(p) for p in padding)
            if len(padding) == 2:
                pads = (padding[0], padding[1], padding[0], padding[1])
            elif len(padding) == 4:
                pads = padding
            else:
                raise ValueError(f"padding must be an integer, (pad_h, pad_w) or (top, left, "
                                 f"bottom, right), not {padding!r}")
        return cls(_pair("kernel", kernel), _pair("stride", stride), pads,
                   _pair("dilation", dilation), int(groups))

    def output_size(self, height, width):
        """``(OH, OW)`` of an ``height x width`` input.

        Raises
        ------
        ValueError
            A size, stride or dilation below 1, a negative pad, or a kernel (dilated) larger
            than the padded input; the message names it.
        """
        for name, pair in (("kernel", self.kernel), ("stride", self.stride),
                           ("dilation", self.dilation)):
            if min(pair) < 1:
                raise ValueError(f"{name} must be at least 1, not {pair}")
        if min(self.pads) < 0:
            raise ValueError(f"pads must not be negative, not {self.pads}")
        if self.groups < 1:
            raise ValueError(f"groups must be at least 1, not {self.groups}")
        if height < 1 or width < 1:
            raise ValueError(f"the input must be at least 1x1, not {height}x{width}")
        top, left, bottom, right = self.pads
        sizes = []
        for size, k, s, d, name in ((height + top + bottom, self.kernel[0], self.stride[0],
                                     self.dilation[0], "height"),
                                    (width + left + right, self.kernel[1], self.stride[1],
                                     self.dilation[1], "width")):
            span = d * (k - 1) + 1
            if span > size:
                raise ValueError(f"the kernel's {name} ({span} with dilation {d}) is larger than "
                                 f"the padded input's ({size})")
            sizes.append((size - span) // s + 1)
        return tuple(sizes)

    def check_channels(self, c_in, c_out, w_channels):
        if c_in % self.groups or c_out % self.groups:
            raise ValueError(f"groups {self.groups} must divide the input channels {c_in} and "
                             f"the output channels {c_out}")
        if w_channels != c_in // self.groups:
            raise ValueError(f"the weights have {w_channels} input channels; with {c_in} "
                             f"channels in {self.groups} groups they must have "
                             f"{c_in // self.groups}")


def _padded(x, geometry, pad_value):
    N, H, W, C = x.shape
    top, left, bottom, right = geometry.pads
    out = np.full((N, H + top + bottom, W + left + right, C), pad_value, dtype=np.int64)
    out[:, top:top + H, left:left + W, :] = x
    return out


def conv2d_reference(x, w, geometry, *, bias=None, pad_value=0):
    """The convolution as its definition states it, one output position at a time:
    ``y[n, oy, ox, co] = bias[co] + sum over ky, kx, ci of
    x[n, oy*sy + ky*dy - top, ox*sx + kx*dx - left, g*Cg + ci] * w[co, ky, kx, ci]``
    (``g`` the group of ``co``), exact int64. Written apart from :func:`patches`, whose GEMMs it
    checks."""
    x, w = np.asarray(x, dtype=np.int64), np.asarray(w, dtype=np.int64)
    N, H, W, C = x.shape
    c_out, kh, kw, cg = w.shape
    geometry.check_channels(C, c_out, cg)
    oh, ow = geometry.output_size(H, W)
    xp = _padded(x, geometry, pad_value)
    (sy, sx), (dy, dx) = geometry.stride, geometry.dilation
    per_group = c_out // geometry.groups
    y = np.zeros((N, oh, ow, c_out), dtype=np.int64)
    for co in range(c_out):
        g = co // per_group
        for oy in range(oh):
            for ox in range(ow):
                total = np.zeros(N, dtype=np.int64)
                for ky in range(kh):
                    for kx in range(kw):
                        pixel = xp[:, oy * sy + ky * dy, ox * sx + kx * dx, g * cg:(g + 1) * cg]
                        total += pixel @ w[co, ky, kx]
                y[:, oy, ox, co] = total
    if bias is not None:
        y += np.asarray(bias, dtype=np.int64)
    return y


def patches(x, geometry, *, pad_value=0):
    """The input's patches for a GEMM: ``(N * OH * OW, KH * KW * C)``, rows in (n, oy, ox)
    order, columns in (ky, kx, c) order (the weights' ``(KH, KW, C)`` flattened)."""
    x = np.asarray(x)
    N, H, W, C = x.shape
    kh, kw = geometry.kernel
    oh, ow = geometry.output_size(H, W)
    xp = _padded(x, geometry, pad_value)
    (sy, sx), (dy, dx) = geometry.stride, geometry.dilation
    out = np.empty((N, oh, ow, kh, kw, C), dtype=np.int64)
    for ky in range(kh):
        for kx in range(kw):
            out[:, :, :, ky, kx, :] = xp[:, ky * dy:ky * dy + sy * (oh - 1) + 1:sy,
                                         kx * dx:kx * dx + sx * (ow - 1) + 1:sx, :]
    return out.reshape(N * oh * ow, kh * kw * C)


def lower_groups(x, w, geometry, *, pad_value=0, pack=1, fill=0):
    """The GEMMs of a convolution: a list of ``(A, B, columns)``, ``A`` the patches
    ``(N * OH * OW, KH * KW * Cg)`` of a group, ``B`` its weights ``(KH * KW * Cg, Cout /
    groups)``, ``columns`` the output channels it gives (a slice).

    ``pack`` groups go into one GEMM: ``A`` their patches side by side, ``B`` block-diagonal,
    each group's weights against its own patches and ``fill`` elsewhere (the weights' zero
    point, so that those entries weigh nothing: a scalar or one per output channel). Depthwise
    (``groups == C``) with ``pack`` 1 is ``C`` GEMMs of one output column each; packing as many
    groups as the array has columns fills the array's columns, at the price of multiplying the
    off-diagonal entries too (``pack`` times the work of each group, in one GEMM instead of
    ``pack``)."""
    x, w = np.asarray(x), np.asarray(w)
    N, H, W, C = x.shape
    c_out, kh, kw, cg = w.shape
    geometry.check_channels(C, c_out, cg)
    if not isinstance(pack, (int, np.integer)) or pack < 1:
        raise ValueError(f"pack must be a positive integer, not {pack!r}")
    per_group = c_out // geometry.groups
    fill = np.broadcast_to(np.asarray(fill, dtype=np.int64), (c_out,))
    every = patches(x, geometry, pad_value=pad_value).reshape(-1, kh, kw, C)
    k = kh * kw * cg
    out = []
    for first in range(0, geometry.groups, pack):
        groups = range(first, min(first + pack, geometry.groups))
        cols = slice(first * per_group, (groups[-1] + 1) * per_group)
        A = np.concatenate([every[:, :, :, g * cg:(g + 1) * cg].reshape(len(every), k)
                            for g in groups], axis=1)
        B = np.empty((k * len(groups), per_group * len(groups)), dtype=np.int64)
        B[:] = fill[cols]
        for i, g in enumerate(groups):
            B[i * k:(i + 1) * k, i * per_group:(i + 1) * per_group] = \
                w[g * per_group:(g + 1) * per_group].reshape(per_group, k).T
        out.append((A, B, cols))
    return out
