"""Backbones: ResNet-50/101 (bottleneck, torchvision "v1.5": stride on the 3x3; YOLACT++ puts a
DCNv2 in some blocks' 3x3) and DarkNet-53.

Both take an NHWC normalised image and return the tuple of stage outputs; YOLACT feeds
``model.backbone.selected_layers`` of them to the FPN. ``BACKBONES`` maps each name of the
config's ``BACKBONE_KINDS`` registry to its module; :func:`make_backbone` builds one from the
fields of ``model.backbone`` (keyword arguments).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from yolact_jax.config import BACKBONE_KINDS
from yolact_jax.model.dcn import ModulatedDeformConv
from yolact_jax.model.layers import BatchNorm, conv, he_normal


def dcn_blocks(num_blocks: int, dcn_layers: int, dcn_interval: int = 1) -> tuple[bool, ...]:
  """Which blocks of a stage of ``num_blocks`` use a deformable conv2, as the original's ResNet:
  block 0 iff ``dcn_layers >= num_blocks``; block i >= 1 iff ``i + dcn_layers >= num_blocks``
  and ``i % dcn_interval == 0``. E.g. (23, 23, 3) -> blocks 0, 3, 6, ..., 21."""
  return tuple((dcn_layers >= num_blocks) if i == 0
               else (i + dcn_layers >= num_blocks and i % dcn_interval == 0)
               for i in range(num_blocks))


class Bottleneck(nn.Module):
  """1x1 -> 3x3 (strided) -> 1x1 (x4 channels), residual; shortcut conv+BN when shapes change.

  ``use_dcn``: the 3x3 is a modulated deformable conv (DCNv2, with its own bias and offset conv,
  same stride and padding), as YOLACT++.
  """
  planes: int
  stride: int = 1
  downsample: bool = False
  freeze_bn: bool = False
  dtype: Any = jnp.float32
  use_dcn: bool = False
  bn_groups: int = 1  # BatchNorm statistics per replica (see layers.BatchNorm.groups)

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    bn = lambda name: BatchNorm(frozen=self.freeze_bn, groups=self.bn_groups,  # noqa: E731
                                dtype=self.dtype, name=name)
    kw = dict(bias=False, kernel_init=he_normal, dtype=self.dtype)
    y = conv(self.planes, 1, name='conv1', **kw)(x)
    y = nn.relu(bn('bn1')(y, train))
    if self.use_dcn:
      y = ModulatedDeformConv(self.planes, 3, self.stride, 1, kernel_init=he_normal,
                              dtype=self.dtype, name='conv2')(y)
    else:
      y = conv(self.planes, 3, self.stride, 1, name='conv2', **kw)(y)
    y = nn.relu(bn('bn2')(y, train))
    y = conv(self.planes * 4, 1, name='conv3', **kw)(y)
    y = bn('bn3')(y, train)
    if self.downsample:
      x = conv(self.planes * 4, 1, self.stride, name='downsample_0', **kw)(x)
      x = bn('downsample_1')(x, train)
    return nn.relu(y + x)


class ResNet(nn.Module):
  """Stem (7x7/2 conv, BN, ReLU, 3x3/2 max-pool) and four bottleneck stages (C2..C5).

  ``dcn_layers`` (one count per stage) and ``dcn_interval`` place DCNv2 blocks (:func:`dcn_blocks`).
  """
  layers: tuple[int, ...] = (3, 4, 23, 3)
  base_width: int = 64
  freeze_bn: bool = False
  dtype: Any = jnp.float32
  dcn_layers: tuple[int, ...] = ()
  dcn_interval: int = 1
  bn_groups: int = 1

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> tuple[jnp.ndarray, ...]:
    x = conv(self.base_width, 7, 2, 3, bias=False, kernel_init=he_normal, dtype=self.dtype,
             name='conv1')(x)
    x = BatchNorm(frozen=self.freeze_bn, groups=self.bn_groups, dtype=self.dtype,
                  name='bn1')(x, train)
    x = nn.relu(x)
    x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    outputs = []
    in_channels = self.base_width
    dcn_layers = tuple(self.dcn_layers) or (0,) * len(self.layers)
    for stage, num_blocks in enumerate(self.layers):
      planes = self.base_width * 2**stage
      stride = 1 if stage == 0 else 2
      use_dcn = dcn_blocks(num_blocks, dcn_layers[stage], self.dcn_interval)
      for block in range(num_blocks):
        first = block == 0
        x = Bottleneck(planes, stride if first else 1,
                       downsample=first and (stride != 1 or in_channels != planes * 4),
                       freeze_bn=self.freeze_bn, dtype=self.dtype, use_dcn=use_dcn[block],
                       bn_groups=self.bn_groups, name=f'layers_{stage}_{block}')(x, train)
        in_channels = planes * 4
      outputs.append(x)
    return tuple(outputs)


class DarkNetConv(nn.Module):
  """conv (no bias) -> BN -> LeakyReLU(0.1); children named 0 (conv) and 1 (BN) as the original."""
  features: int
  kernel: int
  stride: int = 1
  freeze_bn: bool = False
  dtype: Any = jnp.float32
  bn_groups: int = 1

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    x = conv(self.features, self.kernel, self.stride, self.kernel // 2, bias=False,
             kernel_init=he_normal, dtype=self.dtype, name='0')(x)
    x = BatchNorm(frozen=self.freeze_bn, groups=self.bn_groups, dtype=self.dtype,
                  name='1')(x, train)
    return nn.leaky_relu(x, 0.1)


class DarkNetBlock(nn.Module):
  """1x1 (2c -> c) then 3x3 (c -> 2c), added to the input (no activation after the add)."""
  channels: int
  freeze_bn: bool = False
  dtype: Any = jnp.float32
  bn_groups: int = 1

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    kw = dict(freeze_bn=self.freeze_bn, dtype=self.dtype, bn_groups=self.bn_groups)
    y = DarkNetConv(self.channels, 1, name='conv1', **kw)(x, train)
    y = DarkNetConv(self.channels * 2, 3, name='conv2', **kw)(y, train)
    return y + x


class DarkNet(nn.Module):
  """3x3 stem to base_width, then stages of (3x3/2 conv to 2c, N blocks); c doubles per stage."""
  layers: tuple[int, ...] = (1, 2, 8, 8, 4)
  base_width: int = 32
  freeze_bn: bool = False
  dtype: Any = jnp.float32
  bn_groups: int = 1

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> tuple[jnp.ndarray, ...]:
    kw = dict(freeze_bn=self.freeze_bn, dtype=self.dtype, bn_groups=self.bn_groups)
    x = DarkNetConv(self.base_width, 3, name='preconv', **kw)(x, train)
    outputs = []
    for stage, num_blocks in enumerate(self.layers):
      channels = self.base_width * 2**stage
      x = DarkNetConv(channels * 2, 3, 2, name=f'layers_{stage}_0', **kw)(x, train)
      for block in range(num_blocks):
        x = DarkNetBlock(channels, name=f'layers_{stage}_{block + 1}', **kw)(x, train)
      outputs.append(x)
    return tuple(outputs)


# model.backbone.kind -> module; its keys are exactly config.BACKBONE_KINDS.
BACKBONES: dict[str, type[nn.Module]] = {'resnet': ResNet, 'darknet': DarkNet}
assert tuple(BACKBONES) == BACKBONE_KINDS, (tuple(BACKBONES), BACKBONE_KINDS)


def make_backbone(*, kind: str, layers: tuple[int, ...], base_width: int,
                  dcn_layers: tuple[int, ...] = (), dcn_interval: int = 1,
                  freeze_bn: bool = False, dtype: Any = jnp.float32, bn_groups: int = 1,
                  name: str = 'backbone') -> nn.Module:
  """The backbone ``kind`` (one of ``BACKBONE_KINDS``): stages ``layers``, stem width
  ``base_width``; ``dcn_layers`` / ``dcn_interval`` place DCNv2 blocks (ResNet only; the fields
  of ``model.backbone``). ``freeze_bn``, ``dtype``, ``bn_groups``: as ``Yolact``'s."""
  if kind not in BACKBONES:
    raise ValueError(f'Unknown backbone kind {kind!r}: expected one of {BACKBONE_KINDS}')
  common = dict(layers=tuple(layers), base_width=base_width, freeze_bn=freeze_bn, dtype=dtype,
                bn_groups=bn_groups, name=name)
  if kind == 'resnet':
    return ResNet(dcn_layers=tuple(dcn_layers), dcn_interval=dcn_interval, **common)
  if any(dcn_layers):
    raise ValueError(f'deformable convolutions exist only in the ResNet backbone, not {kind!r}')
  return BACKBONES[kind](**common)
