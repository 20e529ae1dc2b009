"""Reading a MODEL_CARD.md back: its table rows and its accuracy figures, for the tests that check them."""

import re

ACCURACY = re.compile(r"^(\d+\.\d\d)% \((\d+) of (\d+)\)$")


def card_rows(text):
    """{first cell: [the other cells]} of every markdown table row of a card."""
    rows = {}
    for line in text.splitlines():
        if line.startswith("|") and not line.startswith("|---"):
            cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
            rows[cells[0]] = cells[1:]
    return rows


def card_lines(text):
    """{"name": value} of the card's `- name: value` lines (the first of each name)."""
    found = {}
    for line in text.splitlines():
        match = re.match(r"^- ([^:]+): (.*)$", line)
        if match:
            found.setdefault(match.group(1), match.group(2))
    return found


def assert_accuracy(cell, value, count):
    """`cell` ("62.50% (5 of 8)") shows `value`, an accuracy of `count` images, exactly."""
    match = ACCURACY.match(cell)
    assert match, cell
    percent, hits, shown_count = match.group(1), int(match.group(2)), int(match.group(3))
    assert percent == f"{100 * value:.2f}", (cell, value)
    assert shown_count == round(count) and abs(hits / shown_count - value) < 1e-9, (cell, value, count)


def assert_validation_row(cells, values):
    """A card's validation row (top-1, top-5, loss, where) shows the validation dict `values`."""
    assert_accuracy(cells[0], values["top1"], values["count"])
    assert_accuracy(cells[1], values["top5"], values["count"])
    assert cells[2] == f"{values['loss']:.4f}", (cells, values)
