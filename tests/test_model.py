import re

import torch
import torch.nn as nn
import torch.nn.functional as F

from model import Net, count_parameters
from train import print_summary

# The seed document's torchsummary table: (layer type, output shape, params), row by row.
SEED_TABLE = [
    ("Conv2d", [16, 26, 26], 144), ("ReLU", [16, 26, 26], 0), ("BatchNorm2d", [16, 26, 26], 32),
    ("Dropout", [16, 26, 26], 0),
    ("Conv2d", [10, 24, 24], 1440), ("ReLU", [10, 24, 24], 0), ("BatchNorm2d", [10, 24, 24], 20),
    ("Dropout", [10, 24, 24], 0),
    ("Conv2d", [10, 24, 24], 100), ("MaxPool2d", [10, 12, 12], 0),
    ("Conv2d", [10, 10, 10], 900), ("ReLU", [10, 10, 10], 0), ("BatchNorm2d", [10, 10, 10], 20),
    ("Dropout", [10, 10, 10], 0),
    ("Conv2d", [10, 8, 8], 900), ("ReLU", [10, 8, 8], 0), ("BatchNorm2d", [10, 8, 8], 20),
    ("Dropout", [10, 8, 8], 0),
    ("Conv2d", [16, 6, 6], 1440), ("ReLU", [16, 6, 6], 0), ("BatchNorm2d", [16, 6, 6], 32),
    ("Dropout", [16, 6, 6], 0),
    ("Conv2d", [16, 6, 6], 2304), ("ReLU", [16, 6, 6], 0), ("BatchNorm2d", [16, 6, 6], 32),
    ("Dropout", [16, 6, 6], 0),
    ("AvgPool2d", [16, 1, 1], 0), ("Conv2d", [10, 1, 1], 160),
]
ROW = re.compile(r"^\s*(\w+)-(\d+)\s+\[-1, ([\d, ]+)\]\s+([\d,]+)$")


def test_parameter_count_is_the_seeds_and_under_8k():
    model = Net()
    assert count_parameters(model) == 7544 < 8000
    assert all(p.requires_grad for p in model.parameters())
    assert not any(isinstance(m, nn.Linear) for m in model.modules())


def test_summary_table_matches_the_seed_row_for_row(capsys):
    print_summary(Net())
    printed = capsys.readouterr().out
    rows = [ROW.match(line).groups() for line in printed.splitlines() if ROW.match(line)]
    parsed = [(kind, [int(n) for n in shape.split(", ")], int(params.replace(",", "")))
              for kind, _, shape, params in rows]
    assert parsed == SEED_TABLE
    assert [int(number) for _, number, _, _ in rows] == list(range(1, 29))
    assert "Total params: 7,544" in printed and "Non-trainable params: 0" in printed


def test_summary_leaves_the_model_and_rng_untouched():
    torch.manual_seed(0)
    model = Net()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng_before = torch.get_rng_state()
    print_summary(model)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert torch.equal(rng_before, torch.get_rng_state())


def test_output_is_log_probabilities_of_shape_n_by_10():
    model = Net().eval()
    out = model(torch.randn(7, 1, 28, 28))
    assert out.shape == (7, 10)
    assert torch.all(out <= 0)
    torch.testing.assert_close(out.exp().sum(dim=1), torch.ones(7))


def test_dropout_is_a_constructor_argument():
    probabilities = {m.p for m in Net(dropout=0.2).modules() if isinstance(m, nn.Dropout)}
    assert probabilities == {0.2}


def test_overfits_one_small_batch():
    torch.manual_seed(0)
    images, labels = torch.randn(32, 1, 28, 28), torch.arange(32) % 10
    model = Net(dropout=0.0)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    for _ in range(150):
        optimizer.zero_grad()
        loss = F.nll_loss(model(images), labels)
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.05
    assert (model(images).argmax(dim=1) == labels).all()
