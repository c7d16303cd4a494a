"""Training-step throughput, float32 against --precision bfloat16: forward, backward and
an SGD step on one batch of real training digits, the two interleaved over 5 repeats,
median images/s.

    python results/bench/precision_throughput.py            # 2 threads, batch 64 and 128

It measures the code of commit 6f95240 (git checkout 6f95240 first), where --precision
bfloat16 existed and model.py kept BatchNorm and the classifier in float32 under autocast.
"""
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
import train  # noqa: E402
from model import Net  # noqa: E402

torch.set_num_threads(2)
args = train.parse_args(["--recipe", "fast", "--out-dir", "runs/bench-precision"])
state, loader, _, _ = train.setup(args)
images, labels = next(iter(loader))
cases = [(precision, size) for size in (128, 64) for precision in ("float32", "bfloat16")]
rates = {case: [] for case in cases}
for _ in range(5):
    for precision, size in cases:
        torch.manual_seed(0)
        net = Net(0.0).train()
        optimizer, _ = train.make_optimizer(net, args, steps_per_epoch=100)
        steps = 12800 // size
        for step in range(steps + 3):  # three warm-up steps
            if step == 3:
                start = time.perf_counter()
            optimizer.zero_grad()
            with torch.autocast("cpu", torch.bfloat16, enabled=precision == "bfloat16"):
                loss = F.nll_loss(net(images[:size]), labels[:size])
            loss.item()
            loss.backward()
            optimizer.step()
        rates[precision, size].append(steps * size / (time.perf_counter() - start))
for size in (128, 64):
    float32, bfloat16 = (statistics.median(rates[p, size]) for p in ("float32", "bfloat16"))
    for precision, median in (("float32", float32), ("bfloat16", bfloat16)):
        print(f"batch {size} {precision}: {median:.0f} images/s", [round(r) for r in rates[precision, size]])
    print(f"batch {size}: bfloat16 / float32 = {bfloat16 / float32:.2f}")
