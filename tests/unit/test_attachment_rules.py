"""Pure rules of attachments (PROTOCOL.md section 11, gateway/attachments.py): the type comes from
the bytes, names are cleaned, and the disposition keeps non-images out of the page."""

from __future__ import annotations

import io

import filetype
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from gateway.attachments import SCAN_BYTES, clean_name, content_disposition, sniff, sniff_file, upload_limit


def test_the_type_comes_from_the_bytes() -> None:
    out = io.BytesIO()
    Image.new("RGB", (4, 4)).save(out, "PNG")
    assert sniff(out.getvalue()) == "image/png"
    assert sniff(b"%PDF-1.7\n...") == "application/pdf"
    assert sniff("plain text, ünïcode\n".encode()) == "text/plain"
    assert sniff(b"\x7fELF\x02\x01\x01" + bytes(64)) == "application/x-executable"
    assert sniff(b"text with a \x00 NUL") is None
    assert sniff(b"\xff\xfe\xfd not utf-8") is None


def whole_file_verdict(data: bytes) -> str | None:
    """What sniff decided when it held the whole upload (the rule, stated once over the bytes)."""
    if b"\x00" in data:
        return None
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return "text/plain"


def test_a_large_file_is_scanned_in_pieces_with_the_same_verdict() -> None:
    """sniff_file reads SCAN_BYTES at a time: a character split across two pieces is still
    UTF-8, and a NUL or a bad byte far into the file still counts."""
    split = "é".encode()  # two bytes: the first ends one piece, the second starts the next
    straddling = b"a" * (SCAN_BYTES - 1) + split + b"b" * 100
    assert sniff_file(io.BytesIO(straddling)) == "text/plain"
    assert sniff_file(io.BytesIO(b"a" * (3 * SCAN_BYTES) + b"\x00")) is None
    assert sniff_file(io.BytesIO(b"a" * (2 * SCAN_BYTES + 7) + b"\xff")) is None
    assert sniff_file(io.BytesIO(b"a" * (SCAN_BYTES - 1) + split[:1])) is None  # truncated at the end


@given(st.binary(max_size=64) | st.text(max_size=64).map(str.encode))
def test_without_a_signature_the_verdict_is_the_text_rule_over_all_bytes(data: bytes) -> None:
    signature = filetype.guess(data)
    expected = str(signature.mime) if signature is not None else whole_file_verdict(data)
    assert sniff_file(io.BytesIO(data)) == expected == sniff(data)


def test_names_are_cleaned() -> None:
    assert clean_name("../../etc/passwd") == "passwd"
    assert clean_name("C:\\Users\\me\\report.pdf") == "report.pdf"
    assert clean_name("bad\x00na\u202eme\n.txt") == "badname.txt"
    assert clean_name("") == "file" and clean_name(None) == "file" and clean_name("dir/") == "file"
    assert len(clean_name("a" * 1000)) == 255


@given(st.text())
def test_a_cleaned_name_is_always_safe(name: str) -> None:
    cleaned = clean_name(name)
    assert 1 <= len(cleaned) <= 255
    assert "/" not in cleaned and "\\" not in cleaned
    assert all(ord(ch) >= 32 and ch != "\x7f" for ch in cleaned)


def test_only_images_are_inline_and_the_header_stays_one_token() -> None:
    assert content_disposition("image/png", "a.png").startswith("inline;")
    pdf = content_disposition("application/pdf", 'x"; evil=1.pdf')
    assert pdf.startswith("attachment;") and 'filename="x_; evil=1.pdf"' in pdf
    assert "filename*=UTF-8''%C3%A9t%C3%A9.txt" in content_disposition("text/plain", "été.txt")
    assert content_disposition("text/html", "x.html").startswith("attachment;")


def test_only_the_upload_route_gets_the_big_body_limit() -> None:
    assert upload_limit("/api/rooms/general/attachments", 10) == 10 + 64 * 1024
    assert upload_limit("/api/rooms/general/messages", 10) is None
    assert upload_limit("/api/rooms/a/b/attachments", 10) is None


def test_only_unclaimed_uploads_past_their_age_expire() -> None:
    from chat_service.upload_sweep import expired
    from shared.internal import AttachmentRecord

    def record(created_at: str, claim: str | None = None) -> AttachmentRecord:
        return AttachmentRecord(
            attachment_id="0" * 32,
            name="a.txt",
            size=1,
            content_type="text/plain",
            room="general",
            user_id="u1",
            created_at=created_at,
            claim=claim,
        )

    uploaded = 1_800_000_000.0  # 2027-01-15T08:00:00Z
    stamp = "2027-01-15T08:00:00.000Z"
    assert expired(record(stamp), now=uploaded + 86_400, max_age=86_400)
    assert not expired(record(stamp), now=uploaded + 86_399, max_age=86_400)
    assert not expired(record(stamp, claim="u1:room:cmid"), now=uploaded + 10**7, max_age=86_400)
    assert not expired(record(""), now=uploaded + 10**7, max_age=86_400)  # undated: kept
