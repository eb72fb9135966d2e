"""The topology page's one-time login codes and session tokens (podnet/auth.py)."""

from __future__ import annotations

from podnet.auth import (
    UsedLoginCodes,
    check_ui_login_code,
    check_ui_session,
    ui_login_code,
    ui_session,
)

SECRET = b"0123456789abcdef0123456789abcdef"
OTHER = b"fedcba9876543210fedcba9876543210"
NOW = 1_800_000_000.0


def test_a_code_verifies_until_it_expires() -> None:
    code = ui_login_code(SECRET, NOW, ttl_s=60)
    token = check_ui_login_code(SECRET, code, NOW + 59)
    assert token is not None and token.expires == int(NOW + 60)
    assert check_ui_login_code(SECRET, code, NOW + 60) is None
    assert check_ui_login_code(OTHER, code, NOW) is None


def test_a_code_works_once() -> None:
    used = UsedLoginCodes()
    code = ui_login_code(SECRET, NOW)
    assert used.redeem(SECRET, code, NOW)
    assert not used.redeem(SECRET, code, NOW + 1)
    assert used.redeem(SECRET, ui_login_code(SECRET, NOW), NOW + 1)


def test_forged_and_garbage_codes_are_refused() -> None:
    code = ui_login_code(SECRET, NOW)
    nonce, expires, mac = code.split(".")
    longer = f"{nonce}.{int(expires) + 10_000}.{mac}"
    flipped = f"{nonce}.{expires}.{'0' if mac[0] != '0' else '1'}{mac[1:]}"
    for bad in (longer, flipped, "", "x", "a.b.c", "..", code + ".", code.upper(),
                "9" * 5000, None, 42, f"{nonce}.-5.{mac}", f"{nonce}.{expires}"):
        assert check_ui_login_code(SECRET, bad, NOW) is None, bad
        assert not UsedLoginCodes().redeem(SECRET, bad, NOW)


def test_sessions_and_codes_are_not_interchangeable() -> None:
    session = ui_session(SECRET, NOW)
    code = ui_login_code(SECRET, NOW)
    assert check_ui_session(SECRET, session, NOW + 6 * 86400)
    assert not check_ui_session(SECRET, session, NOW + 7 * 86400)
    assert not check_ui_session(SECRET, code, NOW)
    assert check_ui_login_code(SECRET, session, NOW) is None
    assert not check_ui_session(OTHER, session, NOW)
    assert not check_ui_session(SECRET, None, NOW)


def test_memory_is_bounded() -> None:
    used = UsedLoginCodes(limit=2)
    codes = [ui_login_code(SECRET, NOW, ttl_s=10) for _ in range(3)]
    assert used.redeem(SECRET, codes[0], NOW)
    assert used.redeem(SECRET, codes[1], NOW)
    assert not used.redeem(SECRET, codes[2], NOW)     # full of live codes: refused
    late = ui_login_code(SECRET, NOW + 20, ttl_s=10)
    assert used.redeem(SECRET, late, NOW + 20)        # the expired ones were forgotten
    assert len(used) == 1


def test_used_codes_survive_a_dump_and_load() -> None:
    used = UsedLoginCodes()
    first, second = ui_login_code(SECRET, NOW), ui_login_code(SECRET, NOW)
    token = used.redeem(SECRET, first, NOW)
    assert token is not None and token.nonce == first.split(".")[0]
    text = used.dump(NOW)
    assert text == f"{token.nonce} {token.expires}\n"
    again = UsedLoginCodes()
    again.load(text + "garbage\n" + "0" * 32 + " 1\n" + "\x00 \n", NOW)   # junk and expired
    assert len(again) == 1
    assert again.redeem(SECRET, first, NOW + 1) is None      # used before the "restart"
    assert again.redeem(SECRET, second, NOW + 1) is not None
    assert UsedLoginCodes().dump(NOW) == ""
