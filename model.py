"""The reference 7,544-parameter MNIST network, a 2,962-parameter one, and the dropout they train with.

"The reference" is the design this project reimplements: an eight-convolution MNIST
notebook (7,544 parameters, SGD-Nesterov under OneCycleLR, 99.41% test accuracy at epoch
15) whose torchsummary table Net matches row for row (`python train.py` prints it). No
bias where BatchNorm follows, a 1x1 "transition" convolution before the only max-pool,
global average pooling and a 1x1 convolution as the classifier: no Linear layer.
TinyNet (`--model tiny`) has the same parts with fewer channels, no transition and a
second max-pool. ARCHITECTURES maps the name saved with the weights to the class.

The input contract is here too: a network reads 28x28 digits, light ink on black,
scaled to [0, 1] and then normalized with MNIST's mean and standard deviation
(normalize). And reading weights files (load_model), as train.py writes them and
predict.py, export.py and the page use them. Importing this module loads torch and the
standard library only, and so does its command (`python model.py`): copy it, and a network
is usable without the rest of the project.
"""

import argparse
import pickle
import warnings
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

DEFAULT_DROPOUT = 0.01  # the reference leaves it open; chosen on validation (results/recipes.md)
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081  # of MNIST's training pixels in [0, 1]


def normalize(images):
    """[0, 1] images -> zero mean, unit variance over MNIST, as transforms.Normalize does
    (bit for bit), without its per-batch copies of mean and std to the device."""
    return (images - MNIST_MEAN) / MNIST_STD


class Dropout(nn.Dropout):
    """nn.Dropout with masks drawn four to a 64-bit random word (named Dropout, so that
    torchsummary's table reads like the reference's).

    On a CPU, `bernoulli_` spends more time on one random number per element
    than the convolutions spend on the whole step. Here one 64-bit draw from
    torch's seeded generator gives four 16-bit numbers, so an element is kept
    with probability 1 - p, p rounded to a multiple of 1/65,536, and a kept
    element is scaled by 1 / (1 - p). On CUDA the fused native kernel measured
    faster, so it is used there. Nothing happens in eval mode or at p = 0.
    With inplace=True the mask is applied to x itself, which saves a copy; the
    network does that after BatchNorm, whose backward pass does not need its output.
    """

    RESOLUTION = 1 << 16

    def forward(self, x):
        if not self.training or self.p == 0:
            return x
        if x.device.type != "cpu" or self.p == 1:
            return F.dropout(x, self.p, True, self.inplace)
        mask = self.scaled_mask(x)
        return x.mul_(mask) if self.inplace else x * mask

    def scaled_mask(self, x):
        """1 / (1 - p) where an element is kept, 0 where it is dropped; x's shape and dtype."""
        words = torch.empty(-(-x.numel() // 4), dtype=torch.int64, device=x.device)
        draws = words.random_(-(1 << 63), None).view(torch.int16)[:x.numel()].view(x.shape)
        # int16 draws are uniform on [-32768, 32767]: exactly round(p * 65536) of them are below.
        keep = draws >= round(self.p * self.RESOLUTION) - self.RESOLUTION // 2
        return keep.to(x.dtype).mul_(1 / (1 - self.p))


def conv_block(in_channels, out_channels, dropout, padding=0):
    """3x3 conv -> ReLU -> BatchNorm -> Dropout, in the reference's order."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=padding, bias=False),
        nn.ReLU(),
        nn.BatchNorm2d(out_channels),
        Dropout(dropout, inplace=True),
    )


def scaled_channels(width):
    """The reference's channel counts times WIDTH, rounded, at least 1 each."""
    return tuple(max(1, round(c * width)) for c in Net.CHANNELS)


class Net(nn.Module):
    """The reference network (7,544 parameters). WIDTH scales every channel count; CHANNELS
    sets all seven (conv1, conv2, transition, conv3-conv6) instead: give one or neither."""
    architecture = "reference"
    CHANNELS = (16, 10, 10, 10, 10, 16, 16)  # conv1, conv2, transition, conv3-conv6

    def __init__(self, dropout=DEFAULT_DROPOUT, width=1.0, channels=None):
        super().__init__()
        if channels is not None and width != 1:
            raise ValueError("give width or channels, not both")
        self.width = width
        self.channels = tuple(channels) if channels is not None else scaled_channels(width)
        if len(self.channels) != len(self.CHANNELS) or min(self.channels) < 1:
            raise ValueError(f"channels must be {len(self.CHANNELS)} counts >= 1, not {self.channels}")
        c1, c2, t, c3, c4, c5, c6 = self.channels
        # Input block and first convolution block: 28 -> 26 -> 24, receptive field 5.
        self.conv1 = conv_block(1, c1, dropout)
        self.conv2 = conv_block(c1, c2, dropout)
        # Transition: a 1x1 conv mixes channels cheaply, then halve the map: 24 -> 12 (RF 6).
        self.transition = nn.Sequential(
            nn.Conv2d(c2, t, kernel_size=1, bias=False),
            nn.MaxPool2d(2, 2),
        )
        # Second block: 12 -> 10 -> 8 -> 6, then one padded conv at 6x6: receptive field 22.
        self.conv3 = conv_block(t, c3, dropout)
        self.conv4 = conv_block(c3, c4, dropout)
        self.conv5 = conv_block(c4, c5, dropout)
        self.conv6 = conv_block(c5, c6, dropout, padding=1)
        # Output: global average pool over 6x6 (receptive field 32), then a 1x1 conv to the 10 classes.
        self.gap = nn.AvgPool2d(kernel_size=6)
        self.classifier = nn.Conv2d(c6, 10, kernel_size=1, bias=False)

    def forward(self, x):
        x = self.transition(self.conv2(self.conv1(x)))
        x = self.conv6(self.conv5(self.conv4(self.conv3(x))))
        x = self.classifier(self.gap(x))
        return F.log_softmax(x.flatten(1), dim=1)


class TinyNet(nn.Module):
    """2,962 parameters: six 3x3 convolutions of 6-8 channels and two max-pools.

    Width costs parameters quadratically, so this keeps the reference's six 3x3
    convolutions but at 6-8 channels instead of 10-16, drops the 1x1 transition,
    and adds a second max-pool, which lets the last convolutions see the whole
    digit (receptive field 32). Within 15 epochs, regularization costs it more than
    it gives: its recipe (train.MODEL_RECIPES) has no dropout and no augmentation,
    which scored best on validation. The other designs and recipes that were tried
    are in results/recipes.md.
    """
    architecture = "tiny"

    def __init__(self, dropout=DEFAULT_DROPOUT):
        super().__init__()
        # 28 -> 26 -> 24, then max-pool: 12. Receptive field 6.
        self.block1 = nn.Sequential(conv_block(1, 6, dropout), conv_block(6, 8, dropout),
                                    nn.MaxPool2d(2, 2))
        # 12 -> 10 -> 8, then max-pool: 4. Receptive field 16.
        self.block2 = nn.Sequential(conv_block(8, 8, dropout), conv_block(8, 8, dropout),
                                    nn.MaxPool2d(2, 2))
        # Two padded convolutions at 4x4: receptive field 32 (44 after the pool over 4x4).
        self.block3 = nn.Sequential(conv_block(8, 8, dropout, padding=1),
                                    conv_block(8, 8, dropout, padding=1))
        self.gap = nn.AvgPool2d(kernel_size=4)
        self.classifier = nn.Conv2d(8, 10, kernel_size=1, bias=False)

    def forward(self, x):
        x = self.block3(self.block2(self.block1(x)))
        x = self.classifier(self.gap(x))
        return F.log_softmax(x.flatten(1), dim=1)


ARCHITECTURES = {cls.architecture: cls for cls in (Net, TinyNet)}


def shape_options(model):
    """The keyword arguments, beyond the class, that rebuild MODEL's shape: {} for the
    reference network and the tiny one, {"width": W} for a scaled one, {"channels": [...]}
    for any other channel counts. Weights files record them."""
    if not isinstance(model, Net) or model.channels == Net.CHANNELS:
        return {}
    if model.channels == scaled_channels(model.width):
        return {"width": model.width}
    return {"channels": list(model.channels)}


def shape_error(architecture, width, channels):
    """What is wrong with shaping network ARCHITECTURE by --width WIDTH and --channels CHANNELS
    (train.py's and model.py's flags), or None."""
    if architecture != "reference" and (width != 1 or channels):
        return "--width and --channels shape the reference network only"
    if width != 1 and channels:
        return "give --width or --channels, not both"
    return None


def channel_counts(text):
    """'16,10,10,10,10,16,16' -> [16, 10, ...]: seven whole numbers from 1 to 1024."""
    try:
        counts = [int(part) for part in text.split(",")]
    except ValueError:
        counts = []
    if len(counts) != len(Net.CHANNELS) or not all(1 <= c <= 1024 for c in counts):
        raise argparse.ArgumentTypeError(f"{text!r} is not {len(Net.CHANNELS)} channel counts "
                                         "from 1 to 1024, like 16,10,10,10,10,16,16")
    return counts


def count_parameters(model):
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def receptive_fields(model, size=28):
    """Per layer that has a geometry or parameters, in forward order (the order the modules
    are registered in, for both networks): its name, output side, receptive field, jump
    (the input pixels between two neighbouring outputs) and parameters. Computed from each
    layer's kernel, stride and padding, as r += (k - 1) * j, j *= s."""
    rows, field, jump = [], 1, 1
    for name, layer in model.named_modules():
        if isinstance(layer, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)):
            square = (layer.kernel_size, layer.stride, layer.padding)  # a tuple's first entry says it all
            k, s, p = (v if isinstance(v, int) else v[0] for v in square)
            size = (size + 2 * p - k) // s + 1
            field, jump = field + (k - 1) * jump, jump * s
        elif not isinstance(layer, nn.BatchNorm2d):
            continue
        rows.append({"layer": name, "kind": type(layer).__name__, "size": size, "field": field, "jump": jump,
                     "parameters": sum(t.numel() for t in layer.parameters(recurse=False))})
    return rows


def print_receptive_fields(model):
    rows = receptive_fields(model)
    print(f"{'layer':16} {'kind':12} {'output':>8} {'receptive field':>16} {'jump':>5} {'parameters':>11}")
    for row in rows:
        side = f"{row['size']}x{row['size']}"
        print(f"{row['layer']:16} {row['kind']:12} {side:>8} {row['field']:>16} {row['jump']:>5} "
              f"{row['parameters']:>11,}")
    print(f"{'total':16} {'':12} {'':>8} {'':>16} {'':>5} {count_parameters(model):>11,}")


# Weights files. weights.pt (train.save_weights) holds the network's architecture name
# ("reference" or "tiny"), its shape where that is not the default (shape_options: the width of --width or the
# counts of --channels), and its state_dict of CPU tensors: it loads anywhere, into the
# right class. A bare state_dict (the format before there were two networks) loads as the
# reference network. Loading never runs code from the file (weights_only=True), and every
# failure is one WeightsError line that names the file and keeps the cause.

COMMITTED_WEIGHTS = Path(__file__).resolve().parent / "weights.pt"  # the shipped model, in git


SHAPE_KEYS = ("width", "channels")  # what shape_options may record


class WeightsError(Exception):
    """A weights or checkpoint file that cannot be used; the message names the file."""


def safe_load(path, device="cpu"):
    """torch.load with weights_only=True: a checkpoint is data, and loading one must not
    run code. Any failure is one WeightsError line that names the file."""
    path = Path(path)
    try:
        with open(path, "rb") as file:
            head = file.read(4)
    except FileNotFoundError:
        raise WeightsError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise WeightsError(f"{path} is a directory, not a weights file") from None
    if not head:
        raise WeightsError(f"{path} is empty")
    if head != b"PK\x03\x04":  # torch.save writes a zip archive
        raise WeightsError(f"{path} is not a PyTorch weights file")
    try:
        with warnings.catch_warnings():  # a foreign pickle's protocol warning is noise here
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError:
        raise WeightsError(f"{path} holds more than tensors, and loading it would run code: "
                           "refused") from None
    except Exception:  # a damaged archive fails in the reader's own ways (OSError, RuntimeError, ...)
        raise WeightsError(f"{path} is a damaged PyTorch weights file") from None


def read_weights(path, device="cpu"):
    """(architecture name, its keyword arguments, state_dict) from a weights file that train.py wrote."""
    weights = safe_load(path, device)
    if isinstance(weights, dict) and str(weights.get("format", "")).startswith("mnist-7544/train-checkpoint"):
        raise WeightsError(f"{path} is a train.py checkpoint, not a weights file: use the weights.pt "
                           "beside it")
    if isinstance(weights, dict) and "architecture" in weights and "state_dict" in weights:
        options = {key: weights[key] for key in SHAPE_KEYS if key in weights}
        return weights["architecture"], options, weights["state_dict"]
    return "reference", {}, weights  # a bare state_dict, as train.py wrote before TinyNet


def load_model(path, device="cpu"):
    """The network named in the weights file at PATH, in eval mode, with its weights."""
    name, options, state = read_weights(path, device)
    if not isinstance(name, str) or name not in ARCHITECTURES:
        raise WeightsError(f"{path}: weights of an unknown network {name!r} "
                           f"(known: {', '.join(ARCHITECTURES)})")
    try:
        model = ARCHITECTURES[name](**options).to(device)
        model.load_state_dict(state)
    except (RuntimeError, TypeError, ValueError, AttributeError) as error:  # another network's tensors
        shape = ", ".join(f"{key} {value}" for key, value in options.items())
        described = f"{name} network" + (f" of {shape}" if shape else "")
        reason = " ".join(str(error).split())[:160]  # load_state_dict's message spans lines
        raise WeightsError(f"{path}: not weights for the {described} ({reason})") from None
    if not all(value.isfinite().all() for value in model.state_dict().values() if value.is_floating_point()):
        raise WeightsError(f"{path} holds weights that are not finite numbers (NaN or infinite)")
    return model.eval()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Each layer's output size, receptive field, jump and "
                                                 "parameters, computed from the modules.")
    parser.error = lambda message: parser.exit(2, f"model.py: error: {message} (see --help)\n")  # one line
    parser.add_argument("--model", choices=list(ARCHITECTURES), default="reference")
    parser.add_argument("--width", type=float, default=1.0, help="scales the reference channel counts")
    parser.add_argument("--channels", type=channel_counts,
                        help="the reference network's seven channel counts, e.g. 16,10,10,10,10,16,16")
    args = parser.parse_args()
    if not 0 < args.width <= 8:
        parser.error(f"--width {args.width:g} is outside (0, 8]")
    if error := shape_error(args.model, args.width, args.channels):
        parser.error(error)
    network = Net(width=args.width, channels=args.channels) if args.model == "reference" else TinyNet()
    print_receptive_fields(network)
