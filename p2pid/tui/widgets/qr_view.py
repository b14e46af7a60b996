"""An invite's QR code as a widget, in explicit black and white whatever the theme.

Each cell is an upper half block holding two module rows: its foreground is the top module, its
background the bottom one, both pure #000000 or #ffffff (as the CLI draws it), so no theme can
tint or invert the code and a phone camera reads it off the screen. The quiet zone of 4 light
modules is part of the drawing. The widget is as wide as the code and, unless styled taller (the
code is then centred), as high; whether that fits is for its container to decide (`fits_in`).
"""

from __future__ import annotations

from rich.color import Color
from rich.segment import Segment
from rich.style import Style
from textual.geometry import Size
from textual.strip import Strip
from textual.widget import Widget

UPPER_HALF_BLOCK = "▀"
BLACK = Color.from_rgb(0, 0, 0)
WHITE = Color.from_rgb(255, 255, 255)
# (top module dark, bottom module dark) -> the cell's style
_CELL_STYLES = {
    (top, bottom): Style(color=BLACK if top else WHITE, bgcolor=BLACK if bottom else WHITE)
    for top in (False, True)
    for bottom in (False, True)
}


def qr_strips(text: str) -> list[Strip]:
    """The lines of `text`'s QR code, quiet zone included; an odd last module row is paired with
    a light one (a little more quiet zone)."""
    from p2pid.qr import qr_modules  # pulls in Pillow: only once a code is shown

    modules = qr_modules(text)
    if len(modules) % 2:
        modules.append([False] * len(modules[0]))
    strips = []
    for index in range(0, len(modules), 2):
        pairs = zip(modules[index], modules[index + 1], strict=True)
        segments = [Segment(UPPER_HALF_BLOCK, _CELL_STYLES[pair]) for pair in pairs]
        strips.append(Strip(Segment.simplify(segments)))
    return strips


class QrView(Widget):
    """The QR code of `text`, drawn at one cell per two modules; empty without a text."""

    DEFAULT_CSS = """
    QrView {
        width: auto;
        height: auto;
    }
    """
    ALLOW_SELECT = False  # a selection highlight would recolour the modules

    def __init__(
        self,
        text: str | None = None,
        *,
        name: str | None = None,
        id: str | None = None,
        classes: str | None = None,
    ) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self.text: str | None = None
        self._strips: list[Strip] = []
        self.show(text)

    def show(self, text: str | None) -> None:
        """Draw the code of `text` (None: nothing)."""
        if text == self.text:
            return
        self.text = text
        self._strips = qr_strips(text) if text else []
        self.refresh(layout=True)

    @property
    def cells(self) -> Size:
        """The terminal cells the code takes (columns, lines), 0x0 without a code."""
        if not self._strips:
            return Size(0, 0)
        return Size(self._strips[0].cell_length, len(self._strips))

    def fits_in(self, size: Size) -> bool:
        columns, lines = self.cells
        return columns <= size.width and lines <= size.height

    def get_content_width(self, container: Size, viewport: Size) -> int:
        return self.cells.width

    def get_content_height(self, container: Size, viewport: Size, width: int) -> int:
        return self.cells.height

    def render_line(self, y: int) -> Strip:
        """The code's lines, centred vertically when the widget is taller than the code."""
        index = y - max(0, (self.size.height - len(self._strips)) // 2)
        if 0 <= index < len(self._strips):
            return self._strips[index]
        return Strip.blank(self.size.width, self.rich_style)
