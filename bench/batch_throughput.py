"""Training-step throughput by batch size: forward, backward and an SGD step on random
input, no dropout, batch sizes interleaved over 5 repeats, median images/s.

    python bench/batch_throughput.py 2 reference
    python bench/batch_throughput.py 2 tiny
"""
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from model import ARCHITECTURES  # noqa: E402
from utils import OneLineErrorParser  # noqa: E402

parser = OneLineErrorParser(description=__doc__.split("\n")[0])
parser.add_argument("threads", type=int, nargs="?", default=2)
parser.add_argument("architecture", choices=list(ARCHITECTURES), nargs="?", default="reference")
args = parser.parse_args()
torch.set_num_threads(args.threads)
architecture = args.architecture
sizes = [64, 128, 256, 512]
rates = {size: [] for size in sizes}
for _ in range(5):
    for size in sizes:
        torch.manual_seed(0)
        net = ARCHITECTURES[architecture](0.0).train()
        optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, nesterov=True)
        images, labels = torch.randn(size, 1, 28, 28), torch.randint(0, 10, (size,))
        steps = max(3, 6000 // size)
        for step in range(steps + 2):  # two warm-up steps
            if step == 2:
                start = time.perf_counter()
            optimizer.zero_grad()
            F.nll_loss(net(images), labels).backward()
            optimizer.step()
        rates[size].append(steps * size / (time.perf_counter() - start))
for size in sizes:
    median = statistics.median(rates[size])
    print(architecture, size, f"{median:.0f} images/s", [round(r) for r in rates[size]])
