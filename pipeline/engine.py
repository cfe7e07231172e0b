"""One training epoch and one evaluation pass over in-memory tensors."""

import torch
import torch.nn.functional as F


def random_shift(x, max_shift, generator):
    """Translate each image by up to max_shift pixels in x and y.

    A roll by at most the 2-pixel zero border of the 32x32 input (see
    data.to_model_input) only wraps border pixels, so it equals a shift.
    """
    n, c, h, w = x.shape
    dy, dx = torch.randint(-max_shift, max_shift + 1, (2, n), generator=generator).to(x.device)
    rows = (torch.arange(h, device=x.device) - dy[:, None]) % h
    cols = (torch.arange(w, device=x.device) - dx[:, None]) % w
    index = (rows[:, :, None] * w + cols[:, None, :]).view(n, 1, h * w).expand(n, c, h * w)
    shifted = x.reshape(n, c, h * w).gather(2, index).view(n, c, h, w)
    return shifted.contiguous(memory_format=torch.channels_last)


# torchvision.transforms.RandomErasing's defaults (Zhong et al. 2017): the box
# covers 2-33% of the image, with an aspect ratio between 0.3 and 3.3.
ERASE_SCALE, ERASE_RATIO = (0.02, 0.33), (0.3, 3.3)


def erasing_boxes(n, height, width, p, generator):
    """For each of n images: (erased?, top, left, box height, box width), drawn from `generator`.

    torchvision draws up to ten boxes per image until one fits; one draw per
    image, clamped to the image, keeps it a few tensor operations.
    """
    erased = torch.rand(n, generator=generator) < p
    area = height * width * torch.empty(n).uniform_(*ERASE_SCALE, generator=generator)
    log_ratio = torch.empty(n).uniform_(*torch.tensor(ERASE_RATIO).log().tolist(), generator=generator)
    h = (area * log_ratio.exp()).sqrt().round().long().clamp(1, height)
    w = (area / log_ratio.exp()).sqrt().round().long().clamp(1, width)
    top = (torch.rand(n, generator=generator) * (height - h + 1)).long()
    left = (torch.rand(n, generator=generator) * (width - w + 1)).long()
    return erased, top, left, h, w


def random_erasing(x, p, generator, border=2):
    """Set a random box to 0 (the mean pixel, after normalisation) in a share p of the images.

    The boxes lie in the 28x28 image, not in the zero border around it.
    """
    n, c, height, width = x.shape
    erased, top, left, h, w = (
        t.to(x.device) for t in erasing_boxes(n, height - 2 * border, width - 2 * border, p, generator)
    )
    rows = torch.arange(height, device=x.device) - border
    cols = torch.arange(width, device=x.device) - border
    in_rows = (rows >= top[:, None]) & (rows < (top + h)[:, None])
    in_cols = (cols >= left[:, None]) & (cols < (left + w)[:, None])
    box = erased[:, None, None] & in_rows[:, :, None] & in_cols[:, None, :]
    return x.masked_fill(box[:, None], 0.0)


def batches(order, batch_size):
    """`order` cut into batches; a last batch of one joins the one before it.

    Batch norm cannot normalise a batch of one in training mode (PyTorch raises
    "Expected more than 1 value per channel"), and a one-image step is noise anyway.
    """
    chunks = list(order.split(batch_size))
    if len(chunks) > 1 and len(chunks[-1]) == 1:
        chunks[-2:] = [torch.cat(chunks[-2:])]
    return chunks


def batches_per_epoch(n, batch_size):
    return n // batch_size + (n % batch_size > 1)


def train_one_epoch(model, optimizer, data, settings, generator, scheduler=None):
    """One pass over shuffled batches of `data` (images, labels); returns (mean loss, accuracy) as floats.

    `settings` (params.TrainSettings) gives the batch size and the augmentation: hflip, shift, erase.
    `generator` (CPU) drives the shuffle and the augmentation, so a seed fixes both.
    `scheduler`, when given, steps after every batch (onecycle, cosine).
    """
    images, labels = data
    batch_size, hflip, shift, erase = settings.batch_size, settings.hflip, settings.shift, settings.erase
    model.train()
    n = len(labels)
    total_loss = torch.zeros((), device=images.device)
    correct = torch.zeros((), device=images.device, dtype=torch.long)
    for idx in batches(torch.randperm(n, generator=generator), batch_size):
        idx = idx.to(images.device)
        x, y = images[idx], labels[idx]
        if hflip:  # mirror half the batch: cheap augmentation on the whole tensor
            flip = (torch.rand(len(idx), generator=generator) < 0.5).to(images.device)
            x = torch.where(flip[:, None, None, None], x.flip(3), x)
        if shift:
            x = random_shift(x, shift, generator)
        if erase:
            x = random_erasing(x, erase, generator)
        logits = model(x)
        loss = F.cross_entropy(logits, y, label_smoothing=settings.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        total_loss += loss.detach() * len(idx)
        correct += (logits.argmax(1) == y).sum()
    return total_loss.item() / n, correct.item() / n


@torch.no_grad()
def predict(model, images, batch_size):
    """Logits for all images, in order, in eval mode."""
    model.eval()
    return torch.cat([model(x) for x in images.split(batch_size)])


def loss_and_accuracy(logits, labels):
    return F.cross_entropy(logits, labels).item(), (logits.argmax(1) == labels).float().mean().item()
