"""Official AdaFace and MagFace checkpoints: files written in each release's own key layout (by the
project's iResNet with random weights) load through `--recognizer adaface:` / `magface:`, give the
saved network's outputs with the release's preprocessing (BGR), and a file in any other layout is
a ModelError naming the keys."""

import argparse
import re

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from curate.errors import ModelError  # noqa: E402
from models import RECOGNIZERS  # noqa: E402
from models.backbones.iresnet import IResNet  # noqa: E402

LAYERS = [2, 2, 2, 2]


def randomised(net):
    """Every weight and BatchNorm statistic random, so that a wrong mapping cannot pass."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, t in net.state_dict().items():
            if t.dtype.is_floating_point:
                if name.endswith("running_var"):
                    t.copy_(torch.rand(t.shape, generator=g) + 0.5)
                else:
                    t.copy_(torch.randn(t.shape, generator=g) * (0.05 if t.ndim > 1 else 0.3)
                            + (1.0 if name.endswith("weight") and t.ndim == 1 else 0.0))
    return net.eval()


def adaface_layout(net) -> dict:
    """Our names -> AdaFace's net.py names (input_layer, body.<k>.res_layer / shortcut_layer,
    output_layer), as its Lightning module saves them under ``model.``."""
    starts = np.cumsum([0] + LAYERS[:-1])
    out = {}
    for k, v in net.state_dict().items():
        if m := re.match(r"stem\.(\d+)\.(.+)", k):
            k = f"input_layer.{m.group(1)}.{m.group(2)}"
        elif m := re.match(r"stages\.(\d+)\.(\d+)\.body\.(\d+)\.(.+)", k):
            k = f"body.{starts[int(m.group(1))] + int(m.group(2))}.res_layer.{m.group(3)}.{m.group(4)}"
        elif m := re.match(r"stages\.(\d+)\.(\d+)\.downsample\.(\d+)\.(.+)", k):
            k = f"body.{starts[int(m.group(1))] + int(m.group(2))}.shortcut_layer.{m.group(3)}.{m.group(4)}"
        elif k.startswith(("bn2.", "fc.", "features.")):
            if k in ("features.weight", "features.bias"):
                continue  # BatchNorm1d(affine=False) in AdaFace
            head, rest = k.split(".", 1)
            k = f"output_layer.{ {'bn2': 0, 'fc': 3, 'features': 4}[head]}.{rest}"
        out["model." + k] = v
    out["head.kernel"] = torch.randn(32, 7)  # the AdaFace margin head: not part of the recognizer
    return out


def magface_layout(net, prefix: str) -> dict:
    """Our names -> insightface's iresnet names (conv1, bn1, prelu, layer<s>.<b>.bn1 ...), under
    MagFace's builder prefix, plus its MagLinear head."""
    body = ["bn1", "conv1", "bn2", "prelu", "conv2", "bn3"]
    out = {}
    for k, v in net.state_dict().items():
        if m := re.match(r"stem\.(\d+)\.(.+)", k):
            k = f"{['conv1', 'bn1', 'prelu'][int(m.group(1))]}.{m.group(2)}"
        elif m := re.match(r"stages\.(\d+)\.(\d+)\.body\.(\d+)\.(.+)", k):
            k = f"layer{int(m.group(1)) + 1}.{m.group(2)}.{body[int(m.group(3))]}.{m.group(4)}"
        elif m := re.match(r"stages\.(\d+)\.(\d+)\.downsample\.(.+)", k):
            k = f"layer{int(m.group(1)) + 1}.{m.group(2)}.downsample.{m.group(3)}"
        out[prefix + k] = v
    out["module.fc.weight" if prefix == "module.features." else "fc.weight"] = torch.randn(7, 32)
    return out


def crops(n=3):
    return np.random.default_rng(1).integers(0, 256, (n, 112, 112, 3), dtype=np.uint8)


def reference(net, x: np.ndarray, bgr: bool, mean: float, std: float) -> np.ndarray:
    a = (x[..., ::-1] if bgr else x).astype(np.float32)
    with torch.no_grad():
        return net(torch.from_numpy(((a - mean) / std).transpose(0, 3, 1, 2).copy())).numpy()


def test_adaface_checkpoint_reproduces_the_saved_network(tmp_path):
    net = randomised(IResNet(LAYERS, embedding_size=32, width=16, subsample_shortcut=True))
    with torch.no_grad():  # AdaFace's last BatchNorm1d is not affine
        net.features.weight.fill_(1.0)
        net.features.bias.zero_()
    path = tmp_path / "adaface_ir18_webface4m.ckpt"
    torch.save({"epoch": 25, "state_dict": adaface_layout(net), "pytorch-lightning_version": "1.8.6",
                "hyper_parameters": {"args": argparse.Namespace(arch="ir_18", head="adaface", m=0.4, h=0.333)}}, path)
    rec = RECOGNIZERS.build(f"adaface:{path}")
    assert (rec.template, rec.size, rec.dim) == ("arcface", 112, 32) and rec.id.startswith("adaface-ir18@")
    x = crops()
    got = rec.embed(x)
    want = reference(net, x, bgr=True, mean=127.5, std=127.5)  # BGR, (x/255 - 0.5)/0.5
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    assert not np.allclose(got, reference(net, x, bgr=False, mean=127.5, std=127.5), atol=1e-3)  # RGB would differ
    assert np.all(np.linalg.norm(got, axis=1) > 0)  # the raw feature: its norm is the quality


@pytest.mark.parametrize("prefix", ["features.module.", "module.features."])
def test_magface_checkpoint_reproduces_the_saved_network(tmp_path, prefix):
    net = randomised(IResNet(LAYERS, embedding_size=32, width=16, eps=2e-5))
    path = tmp_path / "magface_iresnet18.pth"
    torch.save({"epoch": 24, "arch": "iresnet18", "state_dict": magface_layout(net, prefix)}, path)
    rec = RECOGNIZERS.build(f"magface:{path}")
    assert rec.dim == 32 and rec.id.startswith("magface-ir18@")
    x = crops()
    np.testing.assert_allclose(rec.embed(x), reference(net, x, bgr=True, mean=0.0, std=255.0), rtol=1e-4, atol=1e-4)
    assert not np.allclose(rec.embed(x), reference(net, x, bgr=False, mean=0.0, std=255.0), atol=1e-3)


def test_a_checkpoint_in_another_layout_names_its_keys(tmp_path):
    net = randomised(IResNet(LAYERS, embedding_size=32, width=16, eps=2e-5))
    state = magface_layout(net, "features.module.")
    state["features.module.layer2.1.bnX.weight"] = state.pop("features.module.layer2.1.bn3.weight")
    path = tmp_path / "renamed.pth"
    torch.save({"state_dict": state}, path)
    with pytest.raises(ModelError, match=r"missing 1: stages\.1\.1\.body\.5\.weight.*unexpected 1: layer2\.1\.bnX\.weight"):
        RECOGNIZERS.build(f"magface:{path}")
    # an AdaFace file given as MagFace (and the reverse) is refused the same way, not half-loaded
    ada = tmp_path / "ada.ckpt"
    torch.save({"state_dict": adaface_layout(randomised(IResNet(LAYERS, embedding_size=32, width=16,
                                                                   subsample_shortcut=True)))}, ada)
    with pytest.raises(ModelError, match="not a magface iResNet checkpoint"):
        RECOGNIZERS.build(f"magface:{ada}")
    with pytest.raises(ModelError, match="not a adaface iResNet checkpoint|its keys do not fit"):
        RECOGNIZERS.build(f"adaface:{path}")


class Payload:  # noqa: D101 - a pickled object that weights_only loading must refuse
    def __reduce__(self):
        return (print, ("code ran",))


def test_a_checkpoint_that_pickles_code_is_refused(tmp_path, capsys):
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"model.x": torch.zeros(1)}, "extra": Payload()}, path)
    with pytest.raises(ModelError, match="weights_only=True"):
        RECOGNIZERS.build(f"adaface:{path}")
    assert "code ran" not in capsys.readouterr().out
    with pytest.raises(ModelError, match="no such checkpoint"):
        RECOGNIZERS.build(f"adaface:{tmp_path / 'absent.ckpt'}")
