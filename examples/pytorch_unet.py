"""wgunet's `unet` architecture in PyTorch, loading a run's best.safetensors as it is: the module
names are the tensor names (enc1.conv1.weight, dec1.up.weight, head.bias, ...) and the layouts
are PyTorch's own (Conv2d OIHW, ConvTranspose2d [in, out, kh, kw]).

    python examples/pytorch_unet.py runs/NAME IMAGE.png PREDICTED/IMAGE.png

prints how many pixels of its mask agree with the one `wgunet predict --model runs/NAME --input
IMAGE.png --output PREDICTED` wrote (binary models; needs torch, safetensors, numpy, pillow).
"""
import json
import sys

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file
from torch import nn


def double_conv(cin, cout):
    return nn.ModuleDict({"conv1": nn.Conv2d(cin, cout, 3, padding=1), "conv2": nn.Conv2d(cout, cout, 3, padding=1)})


class UNet(nn.Module):
    def __init__(self, channels, f, classes):
        super().__init__()
        for level in range(4):  # enc1..enc4: F, 2F, 4F, 8F filters; the bridge 16F
            self.add_module(f"enc{level + 1}", double_conv(channels if level == 0 else f << (level - 1), f << level))
        self.bridge = double_conv(f << 3, f << 4)
        for level in range(3, -1, -1):  # dec1 is the deepest: up-sample, concat [up, skip], two convs
            dec = double_conv(f << (level + 1), f << level)
            dec["up"] = nn.ConvTranspose2d(f << (level + 1), f << level, 2, stride=2)
            self.add_module(f"dec{4 - level}", dec)
        self.head = nn.Conv2d(f, classes, 1)

    def forward(self, x):
        block = lambda b, x: torch.relu(b["conv2"](torch.relu(b["conv1"](x))))
        skips = []
        for level in range(4):
            x = block(getattr(self, f"enc{level + 1}"), x)
            skips.append(x)
            x = nn.functional.max_pool2d(x, 2)
        x = block(self.bridge, x)
        for level in range(3, -1, -1):
            dec = getattr(self, f"dec{4 - level}")
            x = block(dec, torch.cat([dec["up"](x), skips[level]], 1))
        return self.head(x)  # logits: sigmoid (1 class) or softmax over dim 1 (K classes)


def preprocess(path, size, channels):
    """wgunet's preprocessing (see the ONNX file's metadata): luma 0.2126/0.7152/0.0722 or RGB,
    / 255, bilinear resize to size x size, clamp to [0, 1], [1, channels, size, size]."""
    rgb = np.asarray(Image.open(path).convert("RGB"), np.float32) / 255
    planes = [rgb @ np.float32([0.2126, 0.7152, 0.0722])] if channels == 1 else [rgb[..., c].copy() for c in range(3)]
    resized = [np.asarray(Image.fromarray(p).resize((size, size), Image.BILINEAR)) for p in planes]
    return np.stack(resized).clip(0, 1)[None]


if __name__ == "__main__":
    run, image, predicted = sys.argv[1:4]
    cfg = json.load(open(f"{run}/model.json"))["model"]
    assert cfg["arch"] == "unet" and cfg["classes"] == 1, "this example is the binary `unet` architecture"
    net = UNet(cfg["channels"], cfg["filters"], cfg["classes"]).eval()
    net.load_state_dict(load_file(f"{run}/best.safetensors"))  # strict: every name and shape must match
    with torch.no_grad():
        prob = torch.sigmoid(net(torch.from_numpy(preprocess(image, cfg["size"], cfg["channels"]))))[0, 0].numpy()
    width, height = Image.open(image).size
    mask = np.asarray(Image.fromarray(prob).resize((width, height), Image.BILINEAR)) > 0.5
    theirs = np.asarray(Image.open(predicted).convert("L")) > 127
    print(f"{(mask == theirs).mean():.4%} of {mask.size} pixels agree with wgunet predict")
