"""One pass of a model over a loader: the loss, the accuracy and the digits it got wrong."""

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F


@dataclass
class Evaluation:
    loss: float  # mean negative log-likelihood
    correct: int
    count: int
    wrong_images: list = field(default_factory=list)  # up to keep_wrong normalized images, on the CPU
    wrong_targets: list = field(default_factory=list)
    wrong_predictions: list = field(default_factory=list)

    @property
    def accuracy(self):
        return 100 * self.correct / self.count


@torch.inference_mode()
def evaluate(model, loader, keep_wrong=25):
    """MODEL (any callable from normalized images to log-probabilities) over LOADER, in
    eval mode. Sums stay on the device until the end; the only other host syncs pick out
    wrong digits, and stop once KEEP_WRONG are kept."""
    if isinstance(model, torch.nn.Module):
        model.eval()
    total_loss, correct, count = 0.0, 0, 0
    wrong = ([], [], [])
    for images, targets in loader:
        output = model(images)
        predictions = output.argmax(dim=1)
        total_loss = total_loss + F.nll_loss(output, targets, reduction="sum").double()
        hits = predictions == targets
        correct = correct + hits.sum()
        count += len(targets)
        if len(wrong[0]) < keep_wrong:
            misses = ~hits
            for kept, values in zip(wrong, (images[misses], targets[misses], predictions[misses])):
                kept.extend(values[:keep_wrong - len(kept)].cpu().unbind())
    return Evaluation(float(total_loss) / count, int(correct), count, wrong[0],
                      [int(t) for t in wrong[1]], [int(p) for p in wrong[2]])
