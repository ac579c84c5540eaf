"""MobileFaceNet: depthwise-separable bottlenecks down to 7x7, a global depthwise conv, then a
linear embedding with BN1d. ~1M parameters: the CPU-friendly backbone for tests and quick rounds."""

from __future__ import annotations

from torch import nn

from models.backbones.base import BACKBONES


def conv_bn(cin, cout, k=1, s=1, p=0, groups=1, act=True):
    layers = [nn.Conv2d(cin, cout, k, s, p, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    if act:
        layers.append(nn.PReLU(cout))
    return nn.Sequential(*layers)


class DepthWise(nn.Module):
    def __init__(self, cin, cout, groups, stride=1, residual=False):
        super().__init__()
        self.residual = residual
        self.body = nn.Sequential(
            conv_bn(cin, groups), conv_bn(groups, groups, 3, stride, 1, groups=groups), conv_bn(groups, cout, act=False)
        )

    def forward(self, x):
        y = self.body(x)
        return x + y if self.residual else y


def residual(c, n, groups):
    return nn.Sequential(*[DepthWise(c, c, groups, residual=True) for _ in range(n)])


class MobileFaceNet(nn.Module):
    def __init__(self, embedding_size: int = 512, scale: int = 1):
        super().__init__()
        c = 64 * scale
        self.body = nn.Sequential(
            conv_bn(3, c, 3, 2, 1),                       # 56
            conv_bn(c, c, 3, 1, 1, groups=c),
            DepthWise(c, c, 2 * c, stride=2),             # 28
            residual(c, 4, 2 * c),
            DepthWise(c, 2 * c, 4 * c, stride=2),         # 14
            residual(2 * c, 6, 4 * c),
            DepthWise(2 * c, 2 * c, 8 * c, stride=2),     # 7
            residual(2 * c, 2, 4 * c),
            conv_bn(2 * c, 512, 1),
            conv_bn(512, 512, 7, 1, 0, groups=512, act=False),  # global depthwise conv
        )
        self.fc = nn.Linear(512, embedding_size, bias=False)
        self.features = nn.BatchNorm1d(embedding_size)

    def forward(self, x):
        return self.features(self.fc(self.body(x).flatten(1)))


BACKBONES.register("mbf")(lambda arg, **kw: MobileFaceNet(**kw))
