"""Pictures of what a model does (PIL images; the features command saves them as PNG): Figure 4.

- `predictions_figure`: images with their top-5 predicted labels as bars, the true label
  written under each image and its bar red when it is among the five (Figure 4, left);
- `neighbours_figure`: one row per query image, the query first, then the gallery images
  nearest to it by the Euclidean distance of their fc7 features (Figure 4, right);
- `gradcam_figure`: each image beside its Grad-CAM overlay (`alexnet_tf.explain`), with its
  top-5 labels as bars, the class the map explains in orange.

Thumbnails come in as uint8 [T, T, 3] arrays (`python -m alexnet_tf.features` makes them from
the centre crop the model sees). Drawing needs Pillow (`pip install "alexnet_tf[figures]"`);
it is imported only when a picture is drawn.
"""

import dataclasses

import numpy as np

MARGIN = 8  # around the picture
PAD = 6  # between cells
QUERY_GAP = 18  # between the query column and its neighbours
BACKGROUND = (255, 255, 255)
TEXT = (20, 20, 20)
BAR = (90, 130, 200)  # a predicted label
TRUTH_BAR = (210, 40, 40)  # the true label, as the paper's red bar
BAR_TRACK = (228, 228, 228)
EXPLAINED_BAR = (240, 140, 20)  # the class a Grad-CAM map explains
TOP_K = 5


def pillow():
    try:
        from PIL import Image, ImageDraw, ImageFont
    except ImportError:
        raise ImportError(
            'drawing pictures needs Pillow: pip install "alexnet_tf[figures]" (or pip install pillow)'
        ) from None
    return Image, ImageDraw, ImageFont


def _font():
    _, _, image_font = pillow()
    return image_font.load_default()


def _line_height(font):
    left, top, right, bottom = font.getbbox("Ag|")
    return bottom - min(top, 0) + 3


def _fit(draw, text, font, width):
    """`text`, cut with "..." so it is at most `width` pixels wide."""
    text = str(text)
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "...", font=font) > width:
        text = text[:-1]
    return text + "..."


@dataclasses.dataclass(frozen=True)
class Cell:
    """One image of a picture: its thumbnail and up to two caption lines under it."""

    thumbnail: np.ndarray  # uint8 [T, T, 3]
    captions: tuple = ()


@dataclasses.dataclass(frozen=True)
class NeighboursLayout:
    """Where the cells of a neighbours picture go: a query column, then `k` neighbours."""

    k: int
    thumbnail: int
    caption_lines: int
    line_height: int

    @property
    def cell_height(self):
        return self.thumbnail + self.caption_lines * self.line_height

    def origin(self, row, column):
        """(x, y) of the top-left pixel of the thumbnail in `row`, `column` (0: the query)."""
        x = MARGIN + column * (self.thumbnail + PAD) + (QUERY_GAP - PAD if column else 0)
        return x, MARGIN + row * (self.cell_height + PAD)

    def size(self, rows):
        width = self.origin(0, self.k)[0] + self.thumbnail + MARGIN
        return width, MARGIN + rows * (self.cell_height + PAD) - PAD + MARGIN


def neighbours_layout(k, thumbnail):
    return NeighboursLayout(k, thumbnail, 2, _line_height(_font()))


def _paste(canvas, draw, font, cell, x, y, width, line_height):
    image, _, _ = pillow()
    thumbnail = image.fromarray(np.asarray(cell.thumbnail, np.uint8))
    canvas.paste(thumbnail, (x, y))
    for i, text in enumerate(cell.captions):
        draw.text((x, y + thumbnail.height + 1 + i * line_height), _fit(draw, text, font, width), TEXT, font)


def neighbours_figure(rows, thumbnail):
    """The picture of Figure 4 (right): a row per query, the query then its nearest images.

    Args:
      rows: one list of Cells per query: the query's cell, then its neighbours' nearest first.
      thumbnail: the side of every cell's thumbnail in pixels.

    Returns:
      A PIL image.
    """
    image, image_draw, _ = pillow()
    k = max(len(row) for row in rows) - 1
    layout = neighbours_layout(k, thumbnail)
    canvas = image.new("RGB", layout.size(len(rows)), BACKGROUND)
    draw, font = image_draw.Draw(canvas), _font()
    for r, row in enumerate(rows):
        for c, cell in enumerate(row):
            x, y = layout.origin(r, c)
            _paste(canvas, draw, font, cell, x, y, thumbnail, layout.line_height)
    return canvas


def _bars(draw, font, predictions, x, top, width, line):
    """Up to TOP_K labelled probability bars, one a line from `top`: (label, p, colour or None)."""
    for j, (label, probability, color) in enumerate(predictions[:TOP_K]):
        bar_top = top + j * (line + 2)
        draw.rectangle([x, bar_top, x + width - 1, bar_top + line - 1], fill=BAR_TRACK)
        length = int(round(float(np.clip(probability, 0.0, 1.0)) * width))
        if length:
            draw.rectangle([x, bar_top, x + length - 1, bar_top + line - 1], fill=color or BAR)
        draw.text((x + 2, bar_top), _fit(draw, label, font, width - 4), TEXT, font)


def predictions_figure(items, thumbnail, columns=4):
    """The picture of Figure 4 (left): each image with its top-5 labels as probability bars.

    Args:
      items: (Cell, [(label, probability, is_true_label), ...] best first) per image; the
        cell's caption is the true label, when known.
      thumbnail: the side of every thumbnail in pixels (also the bars' full length).
      columns: images per row.

    Returns:
      A PIL image.
    """
    image, image_draw, _ = pillow()
    font = _font()
    line = _line_height(font)
    columns = max(1, min(columns, len(items)))
    rows = -(-len(items) // columns)
    caption_lines = max(len(cell.captions) for cell, _ in items)
    bars = min(TOP_K, max(len(predictions) for _, predictions in items))
    cell_width = thumbnail
    cell_height = thumbnail + caption_lines * line + 2 + bars * (line + 2)
    width = 2 * MARGIN + columns * (cell_width + 2 * PAD) - 2 * PAD
    height = 2 * MARGIN + rows * (cell_height + 2 * PAD) - 2 * PAD
    canvas = image.new("RGB", (width, height), BACKGROUND)
    draw = image_draw.Draw(canvas)
    for i, (cell, predictions) in enumerate(items):
        x = MARGIN + (i % columns) * (cell_width + 2 * PAD)
        y = MARGIN + (i // columns) * (cell_height + 2 * PAD)
        _paste(canvas, draw, font, cell, x, y, cell_width, line)
        top = y + thumbnail + caption_lines * line + 2
        shown = [(label, p, TRUTH_BAR if is_true else None) for label, p, is_true in predictions]
        _bars(draw, font, shown, x, top, cell_width, line)
    return canvas


@dataclasses.dataclass(frozen=True)
class GradCamLayout:
    """Where a Grad-CAM picture's items go: `columns` of (image, overlay, captions, bars)."""

    thumbnail: int
    caption_lines: int
    bars: int
    line_height: int
    columns: int

    @property
    def item_width(self):
        return 2 * self.thumbnail + PAD

    @property
    def item_height(self):
        return self.thumbnail + self.caption_lines * self.line_height + 2 + self.bars * (self.line_height + 2)

    def origin(self, index):
        """(x, y) of the top-left pixel of item `index`'s image; its overlay is `thumbnail + PAD` right."""
        x = MARGIN + (index % self.columns) * (self.item_width + QUERY_GAP)
        return x, MARGIN + (index // self.columns) * (self.item_height + 2 * PAD)

    def size(self, count):
        rows = -(-count // self.columns)
        width = 2 * MARGIN + self.columns * (self.item_width + QUERY_GAP) - QUERY_GAP
        return width, 2 * MARGIN + rows * (self.item_height + 2 * PAD) - 2 * PAD


def gradcam_layout(count, thumbnail, columns=2, caption_lines=2, bars=TOP_K):
    return GradCamLayout(thumbnail, caption_lines, bars, _line_height(_font()), max(1, min(columns, count)))


def gradcam_figure(items, thumbnail, columns=2):
    """Each image, its Grad-CAM overlay to the right, captions under both, then its top-5 bars.

    Args:
      items: (Cell of the image with its captions, uint8 [T, T, 3] overlay, [(label,
        probability, is_true_label, is_explained), ...] best first) per image. The true
        label's bar is red, the explained class's orange (both: orange).
      thumbnail: the side of every picture in pixels.
      columns: images per row.

    Returns:
      A PIL image.
    """
    image, image_draw, _ = pillow()
    font = _font()
    caption_lines = max(len(cell.captions) for cell, _, _ in items)
    bars = min(TOP_K, max(len(predictions) for _, _, predictions in items))
    layout = gradcam_layout(len(items), thumbnail, columns, caption_lines, bars)
    canvas = image.new("RGB", layout.size(len(items)), BACKGROUND)
    draw = image_draw.Draw(canvas)
    line = layout.line_height
    for i, (cell, overlay, predictions) in enumerate(items):
        x, y = layout.origin(i)
        _paste(canvas, draw, font, cell, x, y, layout.item_width, line)
        canvas.paste(image.fromarray(np.asarray(overlay, np.uint8)), (x + thumbnail + PAD, y))
        top = y + thumbnail + caption_lines * line + 2
        shown = [
            (label, p, EXPLAINED_BAR if explained else TRUTH_BAR if is_true else None)
            for label, p, is_true, explained in predictions
        ]
        _bars(draw, font, shown, x, top, layout.item_width, line)
    return canvas
