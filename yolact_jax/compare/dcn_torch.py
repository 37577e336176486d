"""A pure-PyTorch modulated deformable convolution (DCNv2) standing in for the original's compiled
``dcn_v2`` extension, which only builds against CUDA (its CPU functions raise).

Semantics are those of the extension's CUDA kernel: for output position (ho, wo) and kernel tap
k = i * kw + j (row-major), offset channel 2k is dy and 2k + 1 is dx (interleaved per tap), and
the input is sampled at

    y = ho * stride - padding + i * dilation + dy,    x = wo * stride - padding + j * dilation + dx

by bilinear interpolation in which each of the four neighbours outside the image reads 0; the
whole sample is 0 unless -1 < y < H and -1 < x < W. Each sample is multiplied by its tap's
modulation, the columns are contracted with ``weight`` and ``bias`` is added. :class:`DCN` has
the extension's constructor and parameter names, so a YOLACT++ state_dict loads unchanged;
:func:`yolact_jax.compare.shims.dcn_v2_stand_in` serves it as ``dcn_v2.DCN``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def _pair(v) -> tuple[int, int]:
  return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _tap_coordinates(offset: torch.Tensor, out_hw: tuple[int, int], kernel: tuple[int, int],
                     stride: tuple[int, int], padding: tuple[int, int],
                     dilation: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
  """Sampling positions (y, x), each [N, K, Ho, Wo], from offsets [N, 2K, Ho, Wo] (dy, dx)."""
  n = offset.shape[0]
  (ho, wo), (kh, kw) = out_hw, kernel
  taps = kh * kw
  device, dtype = offset.device, offset.dtype
  tap_i = torch.arange(kh, device=device, dtype=dtype).repeat_interleave(kw) * dilation[0]
  tap_j = torch.arange(kw, device=device, dtype=dtype).repeat(kh) * dilation[1]
  rows = torch.arange(ho, device=device, dtype=dtype) * stride[0] - padding[0]
  cols = torch.arange(wo, device=device, dtype=dtype) * stride[1] - padding[1]
  pairs = offset.reshape(n, taps, 2, ho, wo)
  y = tap_i[:, None, None] + rows[None, :, None] + pairs[:, :, 0]
  x = tap_j[:, None, None] + cols[None, None, :] + pairs[:, :, 1]
  return y, x


def _bilinear_samples(image: torch.Tensor, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
  """Bilinear samples [N, C, K, Ho, Wo] of ``image`` [N, C, H, W] at (y, x) [N, K, Ho, Wo]:
  neighbours outside the image read 0, and a point outside (-1, H) x (-1, W) is 0."""
  n, c, h, w = image.shape
  padded = F.pad(image, (1, 1, 1, 1)).reshape(n, c, (h + 2) * (w + 2))
  inside = (y > -1) & (y < h) & (x > -1) & (x < w)
  y_floor, x_floor = torch.floor(y), torch.floor(x)
  ly, lx = y - y_floor, x - x_floor
  # Top-left neighbour, shifted into the padded image; a point outside is clamped and masked.
  top = y_floor.clamp(-1, h - 1).long() + 1
  left = x_floor.clamp(-1, w - 1).long() + 1
  index = (top * (w + 2) + left).reshape(n, 1, -1)
  out = None
  for weight, shift in (((1 - ly) * (1 - lx), 0), ((1 - ly) * lx, 1),
                        (ly * (1 - lx), w + 2), (ly * lx, w + 3)):
    values = torch.gather(padded, 2, (index + shift).expand(n, c, index.shape[-1]))
    term = weight.reshape(n, 1, -1) * values
    out = term if out is None else out + term
  out = out * inside.reshape(n, 1, -1).to(out.dtype)
  return out.reshape(n, c, *y.shape[1:])


def modulated_deform_conv2d(image: torch.Tensor, offset: torch.Tensor, mask: torch.Tensor,
                            weight: torch.Tensor, bias: torch.Tensor | None, stride=1,
                            padding=0, dilation=1) -> torch.Tensor:
  """DCNv2 in NCHW: image [N, C, H, W], offset [N, 2K, Ho, Wo] ((dy, dx) per tap), mask
  [N, K, Ho, Wo] (the modulation, already through the sigmoid), weight [O, C, kh, kw], bias [O]
  -> [N, O, Ho, Wo]. One deformable group.

  Torch's own ops only, so autograd gives every gradient (training side by side): the image is
  zero-padded by one pixel and flattened, so a neighbour just outside reads a zero; every tap is
  sampled with one ``torch.gather`` per neighbour, the bilinear weights come straight from
  ``y - floor(y)`` (no normalised coordinates, no rounding beyond the kernel's own), and the
  (-1, H) x (-1, W) rule is an explicit mask."""
  stride, padding, dilation = _pair(stride), _pair(padding), _pair(dilation)
  n, c, h, w = image.shape
  out_channels, _, kh, kw = weight.shape
  ho, wo = ((size + 2 * p - d * (k - 1) - 1) // s + 1
            for size, k, s, p, d in zip((h, w), (kh, kw), stride, padding, dilation))
  taps = kh * kw
  if tuple(offset.shape) != (n, 2 * taps, ho, wo) or tuple(mask.shape) != (n, taps, ho, wo):
    raise ValueError(f'offset {tuple(offset.shape)} / mask {tuple(mask.shape)} do not fit '
                     f'the output {(n, ho, wo)} with {taps} taps')
  y, x = _tap_coordinates(offset.to(image.dtype), (ho, wo), (kh, kw), stride, padding, dilation)
  columns = _bilinear_samples(image, y, x) * mask.to(image.dtype)[:, None]
  out = torch.einsum('nckhw,ock->nohw', columns, weight.reshape(out_channels, c, taps))
  if bias is not None:
    out = out + bias.reshape(1, -1, 1, 1)
  return out


class DCN(nn.Module):
  """The extension's ``DCN`` module: a deformable conv with its own offset/modulation conv, with
  the extension's constructor and parameter names (``weight`` [O, I, kh, kw], ``bias`` [O],
  ``conv_offset_mask`` a Conv2d I -> 3 kh kw with bias), so the original's ``backbone.py`` builds
  it unchanged.

  ``conv_offset_mask`` (kernel, stride and padding of the layer, with bias; zero-initialised)
  gives 3K channels, split into thirds: the first two thirds, in order, are the offsets, the last
  third goes through a sigmoid to the modulation. Only ``deformable_groups=1`` is supported
  (the only value YOLACT++ uses); ``dilation`` applies to the deformable sampling only, as in the
  extension, whose offset conv has none.
  """

  def __init__(self, in_channels: int, out_channels: int, kernel_size, stride, padding,
               dilation=1, deformable_groups: int = 1):
    super().__init__()
    if deformable_groups != 1:
      raise NotImplementedError('the PyTorch DCN stand-in supports deformable_groups=1 only')
    self.in_channels, self.out_channels = in_channels, out_channels
    self.kernel_size, self.stride = _pair(kernel_size), _pair(stride)
    self.padding, self.dilation = _pair(padding), _pair(dilation)
    self.deformable_groups = deformable_groups
    self.weight = nn.Parameter(torch.empty(out_channels, in_channels, *self.kernel_size))
    self.bias = nn.Parameter(torch.zeros(out_channels))
    bound = 1 / math.sqrt(in_channels * self.kernel_size[0] * self.kernel_size[1])
    nn.init.uniform_(self.weight, -bound, bound)
    self.conv_offset_mask = nn.Conv2d(in_channels, 3 * self.kernel_size[0] * self.kernel_size[1],
                                      kernel_size=self.kernel_size, stride=self.stride,
                                      padding=self.padding, bias=True)
    nn.init.zeros_(self.conv_offset_mask.weight)
    nn.init.zeros_(self.conv_offset_mask.bias)

  def forward(self, image: torch.Tensor) -> torch.Tensor:
    taps = self.kernel_size[0] * self.kernel_size[1]
    offset_mask = self.conv_offset_mask(image)
    offset, modulation = offset_mask[:, :2 * taps], torch.sigmoid(offset_mask[:, 2 * taps:])
    return modulated_deform_conv2d(image, offset, modulation, self.weight, self.bias,
                                   self.stride, self.padding, self.dilation)
