"""NDI Combined API framing and replies, checked against values NDI publishes and against
replies built here byte by byte (not by the fake server)."""
import struct

import numpy as np
import pytest

from core.navigation.tracking import ToolStatus
from devices.ndi.protocol import (BxHandle, NdiErrorReply, NdiProtocolError, crc16, encode_command,
                                  parse_ascii_reply, parse_bx, parse_phsr, parse_tx, pose_from_quaternion,
                                  tool_status)


def crc_bitwise(data: bytes) -> int:
    """CRC-16 x^16+x^15+x^2+1, reflected (0xA001), init 0: written out bit by bit."""
    c = 0
    for byte in data:
        c ^= byte
        for _ in range(8):
            c = (c >> 1) ^ 0xA001 if c & 1 else c >> 1
    return c


def test_crc16_matches_ndi_published_replies_and_the_catalogue_check_value():
    assert crc16(b"RESET") == 0xBE6F          # the reply to a serial break: "RESETBE6F"
    assert crc16(b"OKAY") == 0xA896           # "OKAYA896"
    assert crc16(b"123456789") == 0xBB3D      # CRC-16/ARC check value
    rng = np.random.default_rng(0)
    for n in (1, 7, 64, 300):
        data = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
        assert crc16(data) == crc_bitwise(data)


def test_command_framing_appends_crc_and_cr():
    raw = encode_command("INIT")
    assert raw == b"INIT:" + f"{crc_bitwise(b'INIT:'):04X}".encode() + b"\r"
    assert encode_command("PENA", "01D")[:-5] == b"PENA:01D"
    with pytest.raises(ValueError, match="upper-case"):
        encode_command("init")


def test_ascii_reply_checks_crc_and_raises_error_replies():
    assert parse_ascii_reply(b"OKAYA896\r") == "OKAY"
    with pytest.raises(NdiProtocolError, match="bad CRC"):
        parse_ascii_reply(b"OKAYA897\r")
    with pytest.raises(NdiProtocolError, match="incomplete"):
        parse_ascii_reply(b"OKAYA8")
    err = b"ERROR0C"
    with pytest.raises(NdiErrorReply, match="ERROR0C") as e:
        parse_ascii_reply(err + f"{crc16(err):04X}\r".encode(), "BX")
    assert e.value.code == 0x0C and "not valid in this mode" in str(e.value)


def _bx(body: bytes) -> bytes:
    header = struct.pack("<HH", 0xA5C4, len(body))
    return header + struct.pack("<H", crc16(header)) + body + struct.pack("<H", crc16(body))


def test_bx_reply_parsed_field_by_field():
    q, t, err = (0.5, 0.5, -0.5, 0.5), (12.5, -300.25, -1800.0), 0.125
    body = bytes([3])
    body += bytes([0x01, 0x01]) + struct.pack("<8f", *q, *t, err) + struct.pack("<II", 0x31, 4711)
    body += bytes([0x02, 0x02]) + struct.pack("<II", 0x31 | 0x40, 4711)     # missing, out of volume
    body += bytes([0x0A, 0x04])                                               # disabled: nothing more
    body += struct.pack("<H", 0x0002)
    r = parse_bx(_bx(body))
    assert r.system_status == 0x0002 and [h.handle for h in r.handles] == [1, 2, 10]
    h1, h2, h3 = r.handles
    assert h1.quaternion == q and h1.translation_mm == t and h1.error_mm == err
    assert (h1.port_status, h1.frame_number) == (0x31, 4711)
    assert h2.quaternion is None and h2.port_status & 0x40
    assert h3.frame_number is None
    assert [tool_status(h) for h in r.handles] == [ToolStatus.OK, ToolStatus.OUT_OF_VOLUME, ToolStatus.DISABLED]
    # ndicapi checks the CRC over header + body; for this CRC that is the same check
    whole = _bx(body)
    assert crc16(whole[:-2]) == struct.unpack("<H", whole[-2:])[0]


@pytest.mark.parametrize("damage, match", [
    (lambda b: b[:3] + bytes([b[3] ^ 1]) + b[4:], "header"),
    (lambda b: b[:-3] + bytes([b[-3] ^ 1]) + b[-2:], "bad CRC"),
    (lambda b: b[:-4], "announces"),
    (lambda b: b"\x00\x00" + b[2:], "A5C4"),
])
def test_bx_damage_is_a_protocol_error(damage, match):
    body = bytes([1, 1, 2]) + struct.pack("<II", 0x31, 9) + struct.pack("<H", 0)
    good = _bx(body)
    assert parse_bx(good).handles[0].frame_number == 9
    with pytest.raises(NdiProtocolError, match=match):
        parse_bx(damage(good))


def test_bx_body_with_unknown_handle_status_or_trailing_bytes_is_refused():
    with pytest.raises(NdiProtocolError, match="unknown status"):
        parse_bx(_bx(bytes([1, 1, 0x09]) + struct.pack("<H", 0)))
    with pytest.raises(NdiProtocolError, match="beyond"):
        parse_bx(_bx(bytes([0]) + struct.pack("<H", 0) + b"\x00"))
    with pytest.raises(NdiProtocolError, match="shorter"):
        parse_bx(_bx(bytes([1, 1, 1]) + b"\x00" * 10))


def test_tx_reply_fixed_point_fields():
    text = ("03" + "01" + "+05000+05000-05000+05000" + "+001250-030025-180000" + "+01250" + "00000031" + "00001267\n"
            + "02MISSING" + "000000B1" + "00001267\n" + "0ADISABLED\n" + "0000")
    r = parse_tx(text)
    h1, h2, h3 = r.handles
    assert h1.quaternion == (0.5, 0.5, -0.5, 0.5) and h1.translation_mm == (12.5, -300.25, -1800.0)
    assert h1.error_mm == 0.125 and h1.frame_number == 0x1267
    assert h2.handle_status == 0x02 and tool_status(h2) is ToolStatus.PARTIALLY_OUT_OF_VOLUME
    assert tool_status(h3) is ToolStatus.DISABLED and r.system_status == 0
    with pytest.raises(NdiProtocolError):
        parse_tx(text.replace("+001250", "+0012X0"))
    with pytest.raises(NdiProtocolError):
        parse_tx(text[:-5])


def test_phsr_reply():
    assert parse_phsr("020A0010B031") == [(0x0A, 0x001), (0x0B, 0x031)]
    assert parse_phsr("00") == []
    with pytest.raises(NdiProtocolError):
        parse_phsr("020A001")


def test_pose_from_quaternion_is_a_rotation_and_refuses_non_unit():
    T = pose_from_quaternion((0.5, 0.5, -0.5, 0.5), (1.0, 2.0, 3.0))
    R = T[:3, :3]
    assert np.allclose(R @ R.T, np.eye(3), atol=1e-12) and np.isclose(np.linalg.det(R), 1.0)
    # 120 deg about (1, -1, 1)/sqrt(3) takes x to -z... check against the axis-angle formula
    axis = np.array([1.0, -1.0, 1.0]) / np.sqrt(3)
    K = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    a = np.deg2rad(120)
    assert np.allclose(R, np.eye(3) + np.sin(a) * K + (1 - np.cos(a)) * K @ K, atol=1e-12)
    assert pose_from_quaternion((0.5, 0.0, 0.0, 0.0), (0, 0, 0)) is None
    assert pose_from_quaternion((1.0, 0.0, 0.0, float("nan")), (0, 0, 0)) is None


def test_out_of_volume_wins_over_a_valid_transform():
    h = BxHandle(1, 0x01, (1, 0, 0, 0), (0, 0, 0), 0.1, 0x31 | 0x80, 1)
    assert tool_status(h) is ToolStatus.PARTIALLY_OUT_OF_VOLUME
    assert tool_status(BxHandle(1, 0x01, (1, 0, 0, 0), (0, 0, 0), 0.1, 0x31, 1)) is ToolStatus.OK
    assert tool_status(BxHandle(1, 0x02, port_status=0x31)) is ToolStatus.MISSING
