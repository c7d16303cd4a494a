"""images.py: a digit photographed on paper (grain, a shadow, a fine pen, a speck) is cropped to
the digit and prepared close to the clean one; clean images are prepared as before; a blank
image is one line."""

import numpy as np
import pytest
from PIL import Image, ImageDraw

import images

SEVEN = [(30, 20), (85, 20), (50, 95)]  # a "7" in a 112-px field, as a person writes it
FOUR = [[(60, 15), (25, 70), (90, 70)], [(70, 40), (70, 100)]]


def page(strokes=(SEVEN,), width=10, grain=0.0, shadow=False, speck=False, seed=0):
    """A photo-like page, [0, 1] gray: STROKES drawn WIDTH px wide, dark (30) on light paper (235),
    off-centre; Gaussian GRAIN (grey levels); with SHADOW the page darkens to 120 across."""
    field = Image.new("L", (112, 112), 0)
    for stroke in strokes:
        ImageDraw.Draw(field).line(stroke, fill=255, width=width, joint="curve")
    ink = np.zeros((170, 230))
    ink[20:132, 30:142] = np.asarray(field) / 255
    if speck:
        ink[150:153, 210:213] = 1  # a dot of dirt in the far corner
    light = np.full(ink.shape, 235.0)
    if shadow:
        light -= 115 * np.arange(ink.shape[1]) / (ink.shape[1] - 1)
    gray = light * (1 - (1 - 30 / 235) * ink) + np.random.default_rng(seed).normal(0, grain, ink.shape)
    return np.clip(np.round(gray), 0, 255) / 255


def plain_preparation(gray):
    """The plain way to prepare a clean image (predict.py's before images.py found ink as a
    scanner does): the ink is what differs from the border's median, stretched by the brightest
    pixel, cropped and placed as MNIST's. A clean image needs no more."""
    edge = images.border(gray)
    if np.median(edge) > 0.5:  # dark ink on light paper
        gray, edge = 1 - gray, 1 - edge
    ink = np.clip((gray - np.median(edge)) / (gray.max() - np.median(edge)), 0, 1)
    rows, cols = np.nonzero(ink > images.INK_THRESHOLD)
    return images.fit_in_field(ink[rows.min():rows.max() + 1, cols.min():cols.max() + 1])


def ink_box(digit, level=0.3):
    rows, cols = np.nonzero(digit > level)
    return rows.min(), rows.max(), cols.min(), cols.max()


def centre_of_mass(digit):
    rows, cols = np.mgrid[:28, :28]
    return (digit * rows).sum() / digit.sum(), (digit * cols).sum() / digit.sum()


def overlap(a, b, level=0.3):
    """Intersection over union of the two digits' ink."""
    a, b = a > level, b > level
    return (a & b).sum() / (a | b).sum()


CASES = {
    "grain sd 25": {"grain": 25},
    "grain sd 45": {"grain": 45},
    "shadow": {"shadow": True, "grain": 6},
    "fine pen": {"width": 2},
    "speck in a corner": {"speck": True},
    "shadow and heavy grain": {"shadow": True, "grain": 45},
}


@pytest.mark.parametrize("case", CASES)
def test_a_paper_photo_is_cropped_to_the_digit_and_prepared_close_to_the_clean_one(case):
    clean = images.to_mnist_digit(page())
    digit = images.to_mnist_digit(page(**CASES[case]))
    top, bottom, left, right = ink_box(digit)
    assert max(bottom - top, right - left) >= 17  # the digit fills MNIST's 20-px box, not the page's
    assert np.abs(np.subtract(ink_box(digit), ink_box(clean))).max() <= 1
    row, col = centre_of_mass(digit)
    assert abs(row - 13.5) <= 1 and abs(col - 13.5) <= 1
    assert overlap(digit, clean) >= 0.6, overlap(digit, clean)
    assert np.abs(digit - clean).mean() < 0.08


def test_a_fine_pen_is_thickened_and_a_heavy_marker_thinned_towards_mnists_stroke(monkeypatch):
    marker = images.to_mnist_digit(page(strokes=FOUR)).sum()
    pen, heavy = (page(strokes=FOUR, width=width) for width in (2, 26))
    prepared = {gray.tobytes(): images.to_mnist_digit(gray).sum() for gray in (pen, heavy)}
    monkeypatch.setattr(images, "STROKE_WIDTH", 0)  # no stroke grown ...
    monkeypatch.setattr(images, "HEAVY_STROKE", 1000)  # ... and none thinned
    untouched = {gray.tobytes(): images.to_mnist_digit(gray).sum() for gray in (pen, heavy)}
    assert untouched[pen.tobytes()] < 0.5 * marker  # untouched, a 2-px pen is a faint scratch at 20 px
    assert 0.7 * marker < prepared[pen.tobytes()] < 1.3 * marker
    assert marker < prepared[heavy.tobytes()] < 0.85 * untouched[heavy.tobytes()]


def ring_digits():
    """Clean digits as the tests of predict.py draw them: rings, light on dark and dark on light."""
    rings = [((28, 28), (1, 1, 13, 17), 255, 0), ((400, 300), (250, 20, 390, 260), 0, 255),
             ((120, 90), (60, 20, 90, 80), 10, 240)]
    for size, box, ink, paper in rings:
        image = Image.new("L", size, paper)
        ImageDraw.Draw(image).ellipse(box, outline=ink, width=max(2, (box[2] - box[0]) // 6))
        yield np.asarray(image, dtype=np.float64) / 255


@pytest.mark.parametrize("gray", [*ring_digits(), page(), page(strokes=FOUR)], ids=lambda g: f"{g.shape}")
def test_clean_images_are_prepared_as_before(gray):
    """The same 28x28 image, but for an image over WORK_SIZE px, now shrunk first: a few pixels
    differ by a little."""
    before, after = plain_preparation(gray), images.to_mnist_digit(gray)
    assert np.abs(after - before).max() < 0.15
    assert np.abs(after - before).mean() < 0.01


def test_a_large_photo_is_read_at_the_working_size():
    gray = page()
    large = np.asarray(Image.fromarray(gray.astype(np.float32)).resize((2300, 1700), Image.BILINEAR),
                       dtype=np.float64)
    assert max(images.shrink(large, images.WORK_SIZE).shape) == images.WORK_SIZE
    assert overlap(images.to_mnist_digit(large), images.to_mnist_digit(gray)) >= 0.8


def test_a_linear_shadow_is_taken_for_paper_not_ink():
    gray = 1 - page(shadow=True)  # as to_mnist_digit() sees it: light ink
    light = 1 - page(strokes=(), shadow=True)
    inside = np.s_[:, :150]  # the opening's window from the far edge, where the ramp is cut
    assert np.abs(images.paper(gray) - light)[inside].max() < 0.02


@pytest.mark.parametrize("gray", [np.ones((50, 40)), np.zeros((30, 30)), np.full((64, 64), 0.7)])
def test_a_blank_image_is_one_line(gray):
    with pytest.raises(images.InputError) as error:
        images.to_mnist_digit(gray)
    assert str(error.value) == "no ink found (blank image)"


def test_pieces_are_the_8_connected_components():
    rng = np.random.default_rng(0)
    for _ in range(50):
        mask = rng.random((int(rng.integers(1, 15)), int(rng.integers(1, 15)))) < rng.uniform(0.1, 0.7)
        labels, sizes = images.pieces_of(mask)
        assert (labels[~mask] == 0).all() and sizes[1:].sum() == mask.sum()
        for label in np.unique(labels[mask]):
            piece = labels == label
            grown = images.max_filter(piece, 3) & mask  # an 8-neighbour on the mask is in the piece
            assert (grown == piece).all() and sizes[label] == piece.sum()
            reached = np.zeros_like(piece)  # and the piece is one: a flood from one pixel fills it
            reached[tuple(np.argwhere(piece)[0])] = True
            while not ((more := images.max_filter(reached, 3) & piece) == reached).all():
                reached = more
            assert (reached == piece).all()


def test_otsu_splits_two_levels_between_them():
    levels = np.array([20] * 900 + [200] * 100)
    assert 20 <= images.otsu_threshold(levels) < 200
