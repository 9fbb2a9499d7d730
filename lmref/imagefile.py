"""Image file headers read before decoding: the format, the size and the EXIF orientation.

    h = read_header(data)            # data: the file's bytes -> Header(format, width, height, orientation)
    img = apply_orientation(img, h.orientation)     # the decoded array turned upright

Why: a decoder allocates what the header claims. A 74-byte PNG can claim 60000 x 60000 pixels and a
1 MB one can inflate to 30000 x 30000 (3.6 GB); reading the header first lets ``lmref.detect``
refuse such a file with one line, before a pixel is decoded. The fields read are the ones the
decoders use (PNG IHDR, the first JPEG SOF, BMP's DIB header, WebP's VP8/VP8L/VP8X, TIFF's first
IFD, GIF's logical screen, the PNM text header), so the decoded image has the size read here.
Other formats are refused: their size cannot be checked before decoding.

EXIF orientation (tag 274, values 1-8, JPEG APP1 / PNG eXIf / WebP EXIF / TIFF IFD0) says how the
stored pixels must be turned to be seen upright, as photo viewers and ``cv2.imread`` do; cameras
store portrait photos sideways with orientation 6 or 8. Pure Python, no OpenCV.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = ["Header", "HeaderError", "read_header", "apply_orientation", "FORMATS"]

FORMATS = ("PNG", "JPEG", "BMP", "WebP", "TIFF", "GIF", "PNM")
_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


class HeaderError(ValueError):
    """Not a supported image format, or a header that is damaged: says which."""


class Header(NamedTuple):
    format: str
    width: int          # of the stored pixels (before the orientation is applied)
    height: int
    orientation: int    # EXIF orientation 1-8 (1: as stored)


def _u(data, pos, n, order):
    """Unsigned int of n bytes at pos ('<' little, '>' big endian); HeaderError past the end."""
    if pos < 0 or pos + n > len(data):
        raise HeaderError("header is truncated")
    return int.from_bytes(data[pos:pos + n], "little" if order == "<" else "big")


def _tiff_ifd0(tiff, tags):
    """{tag: value} for the wanted tags with one SHORT or LONG value in the first IFD of a TIFF
    structure (a TIFF file, or the payload of an EXIF block)."""
    if tiff[:2] not in (b"II", b"MM"):
        raise HeaderError("TIFF structure without a byte-order mark")
    o = "<" if tiff[:2] == b"II" else ">"
    if _u(tiff, 2, 2, o) != 42:
        raise HeaderError("TIFF magic number is not 42 (BigTIFF is not supported)")
    ifd = _u(tiff, 4, 4, o)
    out = {}
    for k in range(_u(tiff, ifd, 2, o)):
        e = ifd + 2 + 12 * k                    # tag(2) type(2) count(4) value(4)
        tag, typ, count = _u(tiff, e, 2, o), _u(tiff, e + 2, 2, o), _u(tiff, e + 4, 4, o)
        if tag in tags and count == 1 and typ in (3, 4):
            out[tag] = _u(tiff, e + 8, 2 if typ == 3 else 4, o)
    return out


def _exif_orientation(block):
    """Orientation from an EXIF block (with or without the 'Exif\\0\\0' prefix); 1 if absent or damaged
    (a damaged EXIF block does not stop the image from being read, as in photo viewers)."""
    tiff = block[6:] if block[:6] == b"Exif\0\0" else block
    try:
        v = _tiff_ifd0(tiff, {274}).get(274, 1)
    except HeaderError:
        return 1
    return v if 1 <= v <= 8 else 1


def _png(d):
    if d[12:16] != b"IHDR":
        raise HeaderError("PNG without IHDR as its first chunk")
    w, h, orient, i = _u(d, 16, 4, ">"), _u(d, 20, 4, ">"), 1, 8
    while i + 8 <= len(d):                      # chunks: length(4) type(4) data crc(4)
        n, typ = _u(d, i, 4, ">"), d[i + 4:i + 8]
        if typ == b"eXIf":
            orient = _exif_orientation(d[i + 8:i + 8 + n])
        if typ == b"IEND":
            break
        i += 12 + n
    return w, h, orient


def _jpeg(d):
    i, size, orient = 2, None, 1
    while i + 4 <= len(d):
        if d[i] != 0xFF:
            raise HeaderError(f"JPEG marker expected at byte {i}")
        m = d[i + 1]
        if m == 0xFF:                                   # fill byte
            i += 1
            continue
        if m == 0x01 or 0xD0 <= m <= 0xD8:              # markers without a length
            i += 2
            continue
        if m in (0xD9, 0xDA):                           # end of image, start of scan: header done
            break
        n = _u(d, i + 2, 2, ">")
        seg = d[i + 4:i + 2 + n]
        if m == 0xE1 and seg[:6] == b"Exif\0\0" and orient == 1:
            orient = _exif_orientation(seg)
        if m in _JPEG_SOF and size is None:
            size = (_u(seg, 3, 2, ">"), _u(seg, 1, 2, ">"))      # precision(1) height(2) width(2)
        i += 2 + n
    if size is None:
        raise HeaderError("JPEG without a frame header (SOF) before its scan")
    return size[0], size[1], orient


def _bmp(d):
    if _u(d, 14, 4, "<") == 12:                                 # BITMAPCOREHEADER: 16-bit sizes
        return _u(d, 18, 2, "<"), _u(d, 20, 2, "<"), 1
    w, h = _u(d, 18, 4, "<"), _u(d, 22, 4, "<")
    h = 2**32 - h if h >= 2**31 else h                          # negative height: top-down rows
    return (0 if w >= 2**31 else w), h, 1


def _webp(d):
    size, orient, i = None, 1, 12
    while i + 8 <= len(d):                                      # RIFF chunks: fourcc(4) size(4) data
        tag, n = d[i:i + 4], _u(d, i + 4, 4, "<")
        p = d[i + 8:i + 8 + n]
        if tag == b"VP8X":
            size = (_u(p, 4, 3, "<") + 1, _u(p, 7, 3, "<") + 1)
        elif tag == b"VP8 " and size is None:
            if p[3:6] != b"\x9d\x01\x2a":
                raise HeaderError("WebP VP8 frame without its start code")
            size = (_u(p, 6, 2, "<") & 0x3FFF, _u(p, 8, 2, "<") & 0x3FFF)
        elif tag == b"VP8L" and size is None:
            if p[:1] != b"\x2f":
                raise HeaderError("WebP VP8L frame without its signature")
            bits = _u(p, 1, 4, "<")
            size = ((bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1)
        elif tag == b"EXIF":
            orient = _exif_orientation(p)
        i += 8 + n + (n & 1)
    if size is None:
        raise HeaderError("WebP without a VP8, VP8L or VP8X chunk")
    return size[0], size[1], orient


def _tiff(d):
    tags = _tiff_ifd0(d, {256, 257, 274})
    if 256 not in tags or 257 not in tags:
        raise HeaderError("TIFF without ImageWidth / ImageLength in its first IFD")
    o = tags.get(274, 1)
    return tags[256], tags[257], o if 1 <= o <= 8 else 1


def _pnm(d):
    """P1-P6: magic, then width and height as text, '#' comments between tokens; P7 (PAM):
    WIDTH / HEIGHT lines."""
    text = bytes(d[:4096]).decode("latin-1")
    if text[1] == "7":
        fields = dict(line.split(None, 1) for line in text.splitlines()[1:40]
                      if len(line.split(None, 1)) == 2 and not line.startswith("#"))
        try:
            return int(fields["WIDTH"]), int(fields["HEIGHT"]), 1
        except (KeyError, ValueError):
            raise HeaderError("PAM header without WIDTH and HEIGHT") from None
    tokens = []
    for line in text[2:].splitlines():
        tokens += line.split("#", 1)[0].split()
        if len(tokens) >= 2:
            break
    if len(tokens) < 2 or not (tokens[0].isdigit() and tokens[1].isdigit()):
        raise HeaderError("PNM header without width and height")
    return int(tokens[0]), int(tokens[1]), 1


def _format(d):
    if d[:8] == b"\x89PNG\r\n\x1a\n":
        return "PNG", _png
    if d[:3] == b"\xff\xd8\xff":
        return "JPEG", _jpeg
    if d[:2] == b"BM":
        return "BMP", _bmp
    if d[:4] == b"RIFF" and d[8:12] == b"WEBP":
        return "WebP", _webp
    if d[:4] in (b"II*\0", b"MM\0*"):
        return "TIFF", _tiff
    if d[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF", lambda d: (_u(d, 6, 2, "<"), _u(d, 8, 2, "<"), 1)
    if len(d) >= 3 and d[0:1] == b"P" and d[1:2] in b"1234567" and d[2:3] in b" \t\r\n":
        return "PNM", _pnm
    raise HeaderError(f"not an image lmref reads (the first bytes are no {', '.join(FORMATS[:-1])} or "
                      f"{FORMATS[-1]} signature)")


def read_header(data):
    """A file's bytes (or its first bytes) -> Header. Raises HeaderError for an unknown format or a
    damaged header, including a width or height of 0."""
    d = bytes(data)
    fmt, parse = _format(d)
    w, h, orient = parse(d)
    if w <= 0 or h <= 0:
        raise HeaderError(f"{fmt} header gives a size of {w}x{h} pixels")
    return Header(fmt, int(w), int(h), int(orient))


def apply_orientation(img, orientation):
    """Stored pixels [H, W, ...] -> the upright image, for EXIF orientation 1-8 (the transforms of
    PIL.ImageOps.exif_transpose: 2 mirror, 3 rotate 180, 4 flip, 5 transpose, 6 rotate 90 clockwise,
    7 transverse, 8 rotate 90 counter-clockwise). Returns a view where it can."""
    if orientation == 2:
        return img[:, ::-1]
    if orientation == 3:
        return img[::-1, ::-1]
    if orientation == 4:
        return img[::-1]
    if orientation == 5:
        return img.swapaxes(0, 1)
    if orientation == 6:
        return np.rot90(img, -1)
    if orientation == 7:
        return img.swapaxes(0, 1)[::-1, ::-1]
    if orientation == 8:
        return np.rot90(img, 1)
    return img
