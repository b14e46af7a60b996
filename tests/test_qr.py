"""QR codes for invites: terminal and PNG rendering, decoding with zxing-cpp."""

from __future__ import annotations

import re
from collections.abc import Callable
from ipaddress import IPv4Address
from pathlib import Path

import nacl.signing
import pytest
import qrcode
import qrcode.constants
import qrcode.exceptions
import qrcode.util
import zxingcpp
from PIL import Image, ImageDraw, ImageFilter

from p2pid.crypto.invites import new_invite
from p2pid.qr import (
    QrDecodeError,
    decode_image,
    image_from_modules,
    modules_from_half_blocks,
    qr_for,
    qr_modules,
    qr_summary,
    read_qr_codes,
    render_half_blocks,
    render_half_blocks_plain,
    write_png,
)
from p2pid.wire.invite import AddressHint, InviteKind, decode_invite, encode_invite

NOW = 1_750_000_000
CELL = re.compile(r"\x1b\[38;2;(0;0;0|255;255;255);48;2;(0;0;0|255;255;255)m▀")
RESET = "\x1b[0m"


def typical_invite_text() -> str:
    """A contact invite with one LAN address and a short name: 166 bytes, 272 characters."""
    identity = nacl.signing.SigningKey(bytes(range(32)))
    device_key = bytes(nacl.signing.SigningKey(bytes(range(32, 64))).verify_key)
    hint = AddressHint(IPv4Address("192.168.1.23"), 40123)
    invite = new_invite(InviteKind.CONTACT, identity, device_key, (hint,), 600, "Alice", NOW)
    return encode_invite(invite)


@pytest.fixture(scope="module")
def invite_text() -> str:
    return typical_invite_text()


def decode_pil(image: Image.Image) -> list[str]:
    return read_qr_codes(image)


# Making the code.


def test_a_typical_invite_is_version_10_at_ecc_m_in_alphanumeric_mode(invite_text: str) -> None:
    assert len(invite_text) == 272
    code = qr_for(invite_text)
    assert code.error_correction == qrcode.constants.ERROR_CORRECT_M
    assert code.border == 4
    assert [chunk.mode for chunk in code.data_list] == [qrcode.util.MODE_ALPHA_NUM]
    assert qr_summary(invite_text) == (10, 57)
    assert len(qr_modules(invite_text)) == 57 + 2 * 4


def test_the_version_is_the_smallest_that_fits(invite_text: str) -> None:
    version, _ = qr_summary(invite_text)
    smaller = qrcode.QRCode(version=version - 1, error_correction=qrcode.constants.ERROR_CORRECT_M)
    smaller.add_data(invite_text, optimize=0)
    with pytest.raises(qrcode.exceptions.DataOverflowError):
        smaller.make(fit=False)


def test_text_too_long_for_any_qr_code_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="do not fit"):
        qr_for("A" * 5000)


def test_the_module_matrix_has_a_light_quiet_zone(invite_text: str) -> None:
    modules = qr_modules(invite_text)
    side = len(modules)
    assert all(len(row) == side for row in modules)
    border = [modules[row][col] for row in range(side) for col in range(side)]
    quiet = [
        dark
        for index, dark in enumerate(border)
        if min(index // side, index % side) < 4 or max(index // side, index % side) >= side - 4
    ]
    assert not any(quiet)


# The terminal.


def test_every_terminal_cell_has_explicit_black_or_white_colours(invite_text: str) -> None:
    rendered = render_half_blocks(invite_text)
    lines = rendered.split("\n")
    assert len(lines) == 33  # 65 module rows, two per line
    for line in lines:
        assert line.endswith(RESET)
        cells = line.removesuffix(RESET)
        assert CELL.sub("", cells) == ""
        assert len(CELL.findall(cells)) == 65


def test_the_plain_rendering_has_the_same_cells(invite_text: str) -> None:
    plain = render_half_blocks_plain(invite_text).split("\n")
    assert len(plain) == 33
    assert {len(line) for line in plain} == {65}
    assert set("".join(plain)) <= {" ", "▀", "▄", "█"}


def draw_modules(modules: list[list[bool]], scale: int) -> Image.Image:
    """Draw a module matrix like a terminal shows it, independently of p2pid.qr."""
    image = Image.new("L", (len(modules[0]) * scale, len(modules) * scale), 255)
    draw = ImageDraw.Draw(image)
    for row_index, row in enumerate(modules):
        for col_index, dark in enumerate(row):
            if dark:
                left, top = col_index * scale, row_index * scale
                draw.rectangle((left, top, left + scale - 1, top + scale - 1), fill=0)
    return image


@pytest.mark.parametrize("render", [render_half_blocks, render_half_blocks_plain])
def test_a_qr_captured_from_the_terminal_decodes(
    invite_text: str, render: Callable[[str], str]
) -> None:
    captured = render(invite_text)
    modules = modules_from_half_blocks(captured)
    assert len(modules) == 66  # the odd last row is paired with a light one
    assert modules[:65] == qr_modules(invite_text)
    assert not any(modules[65])
    assert decode_pil(draw_modules(modules, scale=4)) == [invite_text]
    verify_decodes_to_an_invite(decode_pil(draw_modules(modules, scale=3))[0])


def verify_decodes_to_an_invite(text: str) -> None:
    assert decode_invite(text).name == "Alice"


def test_reading_a_rendering_refuses_what_a_terminal_would_not_show_as_a_code() -> None:
    with pytest.raises(ValueError, match="unexpected character"):
        modules_from_half_blocks("▀x")
    with pytest.raises(ValueError, match="unsupported SGR"):
        modules_from_half_blocks("\x1b[1m▀")
    with pytest.raises(ValueError, match="24-bit"):
        modules_from_half_blocks("\x1b[38;5;16m▀")
    with pytest.raises(ValueError, match="equal"):
        modules_from_half_blocks("▀▀\n▀")
    with pytest.raises(ValueError, match="equal"):
        modules_from_half_blocks("")


def test_reading_a_rendering_follows_the_colours() -> None:
    black_on_white = "\x1b[38;2;0;0;0;48;2;255;255;255m▀\x1b[0m"
    white_on_black = "\x1b[38;2;255;255;255m\x1b[48;2;0;0;0m▀\x1b[49m▀\x1b[0m"
    assert modules_from_half_blocks(black_on_white) == [[True], [False]]
    assert modules_from_half_blocks(white_on_black) == [[False, False], [True, False]]
    assert modules_from_half_blocks("█▄ ") == [[True, False, False], [True, True, False]]


# PNG files and decoding.


def test_png_round_trip(invite_text: str, tmp_path: Path) -> None:
    path = tmp_path / "invite.png"
    write_png(invite_text, path)
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.size == (65 * 8, 65 * 8)
        histogram = image.histogram()
        assert {value for value, count in enumerate(histogram) if count} == {0, 255}
        assert image.getpixel((0, 0)) == 255
        assert image.getpixel((4 * 8, 4 * 8)) == 0  # the top-left finder pattern
    assert decode_image(path) == invite_text
    verify_decodes_to_an_invite(decode_image(path))


@pytest.mark.parametrize(
    ("shrink", "degrees", "blur", "quality"),
    [(0.45, 4.0, 1.0, 30), (0.6, -7.0, 1.2, 20), (0.35, 2.5, 0.8, 40), (1.0, 12.0, 2.0, 15)],
)
def test_a_degraded_copy_still_decodes(
    invite_text: str, tmp_path: Path, shrink: float, degrees: float, blur: float, quality: int
) -> None:
    original = tmp_path / "invite.png"
    write_png(invite_text, original, scale=8)
    with Image.open(original) as image:
        size = (round(image.width * shrink), round(image.height * shrink))
        degraded = (
            image.convert("RGB")
            .resize(size, Image.Resampling.BILINEAR)
            .rotate(degrees, resample=Image.Resampling.BICUBIC, expand=True, fillcolor="white")
            .filter(ImageFilter.GaussianBlur(blur))
        )
    photo = tmp_path / "photo.jpg"
    degraded.save(photo, format="JPEG", quality=quality)
    assert decode_image(photo) == invite_text


def test_a_transparent_screenshot_is_read_on_white(invite_text: str, tmp_path: Path) -> None:
    modules = qr_modules(invite_text)
    mask = image_from_modules(modules, 4).point(lambda value: 255 - value)
    transparent = Image.new("RGBA", mask.size, (0, 0, 0, 0))
    transparent.putalpha(mask)  # black where dark, fully transparent (and black) elsewhere
    path = tmp_path / "screenshot.png"
    transparent.save(path)
    assert decode_image(path) == invite_text


def test_only_surrounding_whitespace_is_stripped(tmp_path: Path) -> None:
    path = tmp_path / "spaced.png"
    write_png("  P2PID: A B \n", path)
    assert decode_image(path) == "P2PID: A B"


def test_a_missing_file_is_a_decode_error(tmp_path: Path) -> None:
    with pytest.raises(QrDecodeError, match="no such file"):
        decode_image(tmp_path / "absent.png")


@pytest.mark.parametrize("content", [b"", b"hello, this is text\n", b"\x89PNG\r\n\x1a\n broken"])
def test_a_file_that_is_not_an_image_is_a_decode_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "not-an-image.png"
    path.write_bytes(content)
    with pytest.raises(QrDecodeError, match="image"):
        decode_image(path)


def test_a_directory_is_a_decode_error(tmp_path: Path) -> None:
    with pytest.raises(QrDecodeError):
        decode_image(tmp_path)


def test_an_image_without_a_qr_code_is_a_decode_error(tmp_path: Path) -> None:
    path = tmp_path / "blank.png"
    image = Image.new("RGB", (300, 200), "white")
    ImageDraw.Draw(image).rectangle((50, 50, 150, 120), fill="black")
    image.save(path)
    with pytest.raises(QrDecodeError, match="no QR code"):
        decode_image(path)


def test_an_image_with_two_qr_codes_is_a_decode_error(tmp_path: Path) -> None:
    first = image_from_modules(qr_modules("P2PID:FIRST"), 6)
    second = image_from_modules(qr_modules("P2PID:SECOND"), 6)
    both = Image.new("L", (first.width + second.width, max(first.height, second.height)), 255)
    both.paste(first, (0, 0))
    both.paste(second, (first.width, 0))
    path = tmp_path / "two.png"
    both.save(path)
    with pytest.raises(QrDecodeError, match="2 QR codes"):
        decode_image(path)


def test_other_barcodes_are_ignored(tmp_path: Path) -> None:
    bitmap = zxingcpp.create_barcode("P2PID:AEAQ", zxingcpp.BarcodeFormat.DataMatrix).to_image(
        scale=8
    )
    height, width = bitmap.shape
    pixels = bytes(memoryview(bitmap))  # type: ignore[arg-type]  # the stub omits __buffer__
    image = Image.frombuffer("L", (width, height), pixels, "raw", "L", 0, 1)
    assert [code.format for code in zxingcpp.read_barcodes(image)] == [
        zxingcpp.BarcodeFormat.DataMatrix
    ]
    path = tmp_path / "datamatrix.png"
    image.save(path)
    with pytest.raises(QrDecodeError, match="no QR code"):
        decode_image(path)
