"""QR codes for invites: drawn in a terminal or a PNG file, and read back from images.

Codes are made at error correction M, in the smallest version that fits, with the standard quiet
zone of 4 modules. Text made only of QR alphanumeric characters (an invite code) is stored in
alphanumeric mode. Decoding uses zxing-cpp, the decoder phones use.

Only the CLI's `invite` and `join --image` commands import this module (it pulls in Pillow).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from typing import Any

import qrcode
import qrcode.constants
import qrcode.exceptions
import zxingcpp
from PIL import Image, UnidentifiedImageError

QUIET_ZONE_MODULES = 4
DEFAULT_PNG_SCALE = 8

Modules = list[list[bool]]  # rows of modules, True for dark, quiet zone included
Rgb = tuple[int, int, int]

DARK: Rgb = (0, 0, 0)
LIGHT: Rgb = (255, 255, 255)
UPPER_HALF_BLOCK = "▀"
LOWER_HALF_BLOCK = "▄"
FULL_BLOCK = "█"
SGR_RESET = "\x1b[0m"

# Plain rendering: (top dark, bottom dark) -> the character, drawn as ink on light paper.
_PLAIN_CELLS = {
    (False, False): " ",
    (True, False): UPPER_HALF_BLOCK,
    (False, True): LOWER_HALF_BLOCK,
    (True, True): FULL_BLOCK,
}
_SGR_OR_CHARACTER = re.compile(r"\x1b\[([0-9;]*)m|(.)", re.DOTALL)


class QrDecodeError(ValueError):
    """The image could not be read, or it does not hold exactly one QR code."""


# Making codes.


def qr_for(text: str) -> qrcode.QRCode[Any]:
    """The QR code of `text`: ECC M, smallest version that fits, quiet zone of 4 modules."""
    code: qrcode.QRCode[Any] = qrcode.QRCode(
        version=None,
        error_correction=qrcode.constants.ERROR_CORRECT_M,
        box_size=1,
        border=QUIET_ZONE_MODULES,
    )
    # One segment: alphanumeric mode when every character allows it, else bytes.
    code.add_data(text, optimize=0)
    try:
        code.make(fit=True)
    except (qrcode.exceptions.DataOverflowError, ValueError):  # 8.2 says "Invalid version (41)"
        raise ValueError(f"{len(text)} characters do not fit in a QR code") from None
    return code


def qr_summary(text: str) -> tuple[int, int]:
    """(QR version, modules per side without the quiet zone) of the code for `text`."""
    code = qr_for(text)
    version: int = code.version
    return version, 17 + 4 * version


def qr_modules(text: str) -> Modules:
    """The module matrix of `text`'s code, quiet zone included, True for dark."""
    return [[bool(module) for module in row] for row in qr_for(text).get_matrix()]


# Terminal rendering.


def render_half_blocks(text: str) -> str:
    """The code for a terminal: two module rows per line, each cell an upper half block with an
    explicit 24-bit foreground (top module) and background (bottom module) of pure black or white,
    so terminal themes cannot invert or tint it. Every line ends with a reset."""
    return "\n".join(_colour_line(top, bottom) for top, bottom in _row_pairs(qr_modules(text)))


def render_half_blocks_plain(text: str) -> str:
    """The same cells as bare characters (" ", "▀", "▄", "█" as ink), without colours."""
    return "\n".join(
        "".join(_PLAIN_CELLS[cell] for cell in zip(top, bottom, strict=True))
        for top, bottom in _row_pairs(qr_modules(text))
    )


def _row_pairs(modules: Modules) -> list[tuple[list[bool], list[bool]]]:
    """Module rows two by two; an odd last row is paired with a light row (more quiet zone)."""
    light_row = [False] * len(modules[0])
    padded = [*modules, light_row] if len(modules) % 2 else modules
    return [(padded[index], padded[index + 1]) for index in range(0, len(padded), 2)]


def _colour_line(top: list[bool], bottom: list[bool]) -> str:
    cells = (
        _sgr_colours(_colour(top_dark), _colour(bottom_dark)) + UPPER_HALF_BLOCK
        for top_dark, bottom_dark in zip(top, bottom, strict=True)
    )
    return "".join(cells) + SGR_RESET


def _colour(dark: bool) -> Rgb:
    return DARK if dark else LIGHT


def _sgr_colours(foreground: Rgb, background: Rgb) -> str:
    fr, fg, fb = foreground
    br, bg, bb = background
    return f"\x1b[38;2;{fr};{fg};{fb};48;2;{br};{bg};{bb}m"


# Reading a rendering back, as a terminal would show it.


class _CellColours:
    """A terminal's SGR colour state; None is the default (ink foreground, paper background)."""

    def __init__(self) -> None:
        self.foreground: Rgb | None = None
        self.background: Rgb | None = None

    def apply(self, parameters: str) -> None:
        codes = [int(code) for code in parameters.split(";")] if parameters else [0]
        while codes:
            code = codes.pop(0)
            if code == 0:
                self.foreground = self.background = None
            elif code in (38, 48):
                colour = _take_rgb(codes)
                if code == 38:
                    self.foreground = colour
                else:
                    self.background = colour
            elif code == 39:
                self.foreground = None
            elif code == 49:
                self.background = None
            else:
                raise ValueError(f"unsupported SGR code {code} in a QR rendering")

    def foreground_dark(self) -> bool:
        return self.foreground is None or _is_dark(self.foreground)

    def background_dark(self) -> bool:
        return self.background is not None and _is_dark(self.background)


def _take_rgb(codes: list[int]) -> Rgb:
    if len(codes) < 4 or codes[0] != 2:
        raise ValueError("only 24-bit colours (38;2;R;G;B / 48;2;R;G;B) are supported")
    _, red, green, blue = (codes.pop(0) for _ in range(4))
    return red, green, blue


def _is_dark(colour: Rgb) -> bool:
    red, green, blue = colour
    return 0.299 * red + 0.587 * green + 0.114 * blue < 128


def modules_from_half_blocks(rendered: str) -> Modules:
    """Rebuild the module matrix from a rendering as a terminal shows it: coloured (from
    render_half_blocks) or plain (render_half_blocks_plain). Each cell is two module rows."""
    modules: Modules = []
    for line in rendered.splitlines():
        top, bottom = _cells_of_line(line)
        modules += [top, bottom]
    if not modules or any(len(row) != len(modules[0]) for row in modules):
        raise ValueError("a QR rendering has lines of equal, non-zero width")
    return modules


def _cells_of_line(line: str) -> tuple[list[bool], list[bool]]:
    colours = _CellColours()
    top: list[bool] = []
    bottom: list[bool] = []
    for match in _SGR_OR_CHARACTER.finditer(line):
        sgr_parameters, character = match.groups()
        if character is None:
            colours.apply(sgr_parameters)
            continue
        top_dark, bottom_dark = _cell_halves(character, colours)
        top.append(top_dark)
        bottom.append(bottom_dark)
    return top, bottom


def _cell_halves(character: str, colours: _CellColours) -> tuple[bool, bool]:
    ink, paper = colours.foreground_dark(), colours.background_dark()
    halves = {
        " ": (paper, paper),
        UPPER_HALF_BLOCK: (ink, paper),
        LOWER_HALF_BLOCK: (paper, ink),
        FULL_BLOCK: (ink, ink),
    }
    if character not in halves:
        raise ValueError(f"unexpected character {character!r} in a QR rendering")
    return halves[character]


# Images.


def image_from_modules(modules: Sequence[Sequence[bool]], scale: int) -> Image.Image:
    """A black-on-white greyscale image, `scale` pixels per module."""
    if scale < 1:
        raise ValueError(f"the scale is pixels per module, at least 1, not {scale}")
    height, width = len(modules), len(modules[0])
    pixels = bytes(0 if dark else 255 for row in modules for dark in row)
    image = Image.frombytes("L", (width, height), pixels)
    return image.resize((width * scale, height * scale), Image.Resampling.NEAREST)


def write_png(text: str, path: str | os.PathLike[str], scale: int = DEFAULT_PNG_SCALE) -> None:
    """Write `text`'s code as a black-on-white PNG, quiet zone included."""
    image_from_modules(qr_modules(text), scale).save(path, format="PNG")


def decode_image(path: str | os.PathLike[str]) -> str:
    """The text of the one QR code in the image at `path`, without surrounding whitespace."""
    codes = read_qr_codes(_open_as_greyscale(path))
    if not codes:
        raise QrDecodeError(f"no QR code found in {os.fspath(path)}")
    if len(codes) > 1:
        raise QrDecodeError(
            f"{len(codes)} QR codes found in {os.fspath(path)}; crop the image to the one to use"
        )
    return codes[0].strip()


def read_qr_codes(image: Image.Image) -> list[str]:
    """The texts of the QR codes in `image`; other symbologies (which random
    module patterns sometimes resemble) are not looked for."""
    codes = zxingcpp.read_barcodes(
        image,
        formats=zxingcpp.BarcodeFormats(zxingcpp.BarcodeFormat.QRCode),
        text_mode=zxingcpp.TextMode.Plain,
    )
    return [code.text for code in codes]


def _open_as_greyscale(path: str | os.PathLike[str]) -> Image.Image:
    """The image flattened onto white (transparent screenshots) and made greyscale."""
    try:
        with Image.open(path) as opened:
            opened.load()
            image = opened.convert("RGBA")
    except FileNotFoundError:
        raise QrDecodeError(f"no such file: {os.fspath(path)}") from None
    except (UnidentifiedImageError, Image.DecompressionBombError) as error:
        raise QrDecodeError(f"not an image this program can read: {os.fspath(path)}") from error
    except OSError as error:
        raise QrDecodeError(f"cannot read image {os.fspath(path)}: {error}") from error
    paper = Image.new("RGBA", image.size, (*LIGHT, 255))
    return Image.alpha_composite(paper, image).convert("L")
