"""iResNet (improved ResNet, as used by ArcFace): pre-activation-style basic blocks with PReLU,
stride-2 stages down to 7x7, then BN -> dropout -> FC -> BN1d giving the raw embedding."""

from __future__ import annotations

from torch import nn

from models.backbones.base import BACKBONES


def conv3x3(cin, cout, stride=1):
    return nn.Conv2d(cin, cout, 3, stride, 1, bias=False)


class IBasicBlock(nn.Module):
    def __init__(self, cin, cout, stride=1, downsample=None, eps=1e-5):
        super().__init__()
        self.body = nn.Sequential(
            nn.BatchNorm2d(cin, eps=eps), conv3x3(cin, cout), nn.BatchNorm2d(cout, eps=eps), nn.PReLU(cout),
            conv3x3(cout, cout, stride), nn.BatchNorm2d(cout, eps=eps),
        )
        self.downsample = downsample

    def forward(self, x):
        return self.body(x) + (x if self.downsample is None else self.downsample(x))


class IResNet(nn.Module):
    """``eps``: BatchNorm epsilon (MagFace's checkpoints use 2e-5). ``subsample_shortcut``: where
    a stage keeps its width (the first stage), the stride-2 shortcut subsamples without weights,
    as AdaFace's IR nets do, instead of a 1x1 convolution (insightface's)."""

    def __init__(self, layers: list[int], embedding_size: int = 512, dropout: float = 0.0, width: int = 64,
                 eps: float = 1e-5, subsample_shortcut: bool = False):
        super().__init__()
        self.stem = nn.Sequential(conv3x3(3, width), nn.BatchNorm2d(width, eps=eps), nn.PReLU(width))
        stages, cin = [], width
        for i, n in enumerate(layers):
            cout = width * 2**i
            if subsample_shortcut and cin == cout:
                down = nn.MaxPool2d(1, 2)
            else:
                down = nn.Sequential(nn.Conv2d(cin, cout, 1, 2, bias=False), nn.BatchNorm2d(cout, eps=eps))
            blocks = [IBasicBlock(cin, cout, 2, down, eps)] + [IBasicBlock(cout, cout, eps=eps) for _ in range(n - 1)]
            stages.append(nn.Sequential(*blocks))
            cin = cout
        self.stages = nn.Sequential(*stages)
        self.bn2 = nn.BatchNorm2d(cin, eps=eps)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(cin * 7 * 7, embedding_size)
        self.features = nn.BatchNorm1d(embedding_size, eps=eps)
        nn.init.constant_(self.features.weight, 1.0)
        self.features.weight.requires_grad = False  # as in ArcFace: scale is left to the FC layer
        for mod in self.modules():
            if isinstance(mod, nn.Conv2d):
                nn.init.normal_(mod.weight, 0, 0.1)
            elif isinstance(mod, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.constant_(mod.weight, 1)
                nn.init.constant_(mod.bias, 0)
        for mod in self.modules():  # zero-init the last BN of each residual branch: blocks start as identity
            if isinstance(mod, IBasicBlock):
                nn.init.constant_(mod.body[-1].weight, 0)

    def forward(self, x):
        x = self.bn2(self.stages(self.stem(x)))
        return self.features(self.fc(self.dropout(x.flatten(1))))


for _name, _layers in {"r18": [2, 2, 2, 2], "r34": [3, 4, 6, 3], "r50": [3, 4, 14, 3], "r100": [3, 13, 30, 3]}.items():
    BACKBONES.register(_name)(lambda arg, _l=_layers, **kw: IResNet(_l, **kw))
