from __future__ import annotations

from urllib.parse import parse_qs

import pytest

from shared.signing import BadSignature, LinkExpired, sign, signed_query, verify, verify_query

SECRET = "s3cret"
NOW = 1_700_000_000


def test_sign_is_deterministic_hex_and_covers_every_field():
    base = sign(SECRET, "GET", "a/b.zip", NOW + 60, "x.zip")
    assert len(base) == 64 and int(base, 16) >= 0
    assert base == sign(SECRET, "get", "a/b.zip", NOW + 60, "x.zip")
    variants = [
        sign("other", "GET", "a/b.zip", NOW + 60, "x.zip"),
        sign(SECRET, "PUT", "a/b.zip", NOW + 60, "x.zip"),
        sign(SECRET, "GET", "a/b.zi", NOW + 60, "x.zip"),
        sign(SECRET, "GET", "a/b.zip", NOW + 61, "x.zip"),
        sign(SECRET, "GET", "a/b.zip", NOW + 60, "y.zip"),
        sign(SECRET, "GET", "a/b.zip", NOW + 60, None),
        sign(SECRET, "GET", "a/b.zip", NOW + 60, ""),
    ]
    assert base not in variants and len(set(variants)) == len(variants)


def test_field_boundaries_cannot_be_shifted():
    # A naive "key|filename" concatenation would let these collide.
    assert sign(SECRET, "GET", "a", NOW, "b,c") != sign(SECRET, "GET", "a,b", NOW, "c")
    assert sign(SECRET, "GET", 'a"', NOW, None) != sign(SECRET, "GET", "a", NOW, '"')


def test_head_shares_the_get_signature():
    assert sign(SECRET, "HEAD", "k", NOW, None) == sign(SECRET, "GET", "k", NOW, None)


def test_verify_accepts_a_genuine_link():
    signature = sign(SECRET, "GET", "k", NOW + 10, "f.zip")
    verify(SECRET, "GET", "k", NOW + 10, "f.zip", signature, now=NOW)
    verify(SECRET, "GET", "k", str(NOW + 10), "f.zip", signature.upper(), now=NOW)


@pytest.mark.parametrize(
    "change",
    [
        {"secret": "nope"},
        {"method": "PUT"},
        {"key": "k2"},
        {"expires": NOW + 11},
        {"filename": "g.zip"},
        {"filename": None},
    ],
)
def test_verify_rejects_any_changed_field(change):
    args = {"secret": SECRET, "method": "GET", "key": "k", "expires": NOW + 10, "filename": "f.zip"}
    signature = sign(**args)
    args.update(change)
    with pytest.raises(BadSignature):
        verify(**args, signature=signature, now=NOW)


def test_verify_rejects_a_flipped_signature_character():
    signature = sign(SECRET, "GET", "k", NOW + 10, None)
    flipped = ("0" if signature[5] != "0" else "1").join((signature[:5], signature[6:]))
    with pytest.raises(BadSignature):
        verify(SECRET, "GET", "k", NOW + 10, None, flipped, now=NOW)


@pytest.mark.parametrize("signature", [None, "", "abc", "g" * 64, "0" * 63, "0" * 65, "é" * 64, "0" * 64])
def test_verify_rejects_malformed_or_wrong_signatures(signature):
    with pytest.raises(BadSignature):
        verify(SECRET, "GET", "k", NOW + 10, None, signature, now=NOW)


@pytest.mark.parametrize("expires", [None, "", "soon", "-5", "1e9", " 17", "9" * 40, True, -1, 1.5])
def test_verify_rejects_malformed_expiry(expires):
    signature = sign(SECRET, "GET", "k", NOW + 10, None)
    with pytest.raises(BadSignature):
        verify(SECRET, "GET", "k", expires, None, signature, now=NOW)


def test_expired_only_for_genuine_links():
    signature = sign(SECRET, "GET", "k", NOW, None)
    with pytest.raises(LinkExpired):
        verify(SECRET, "GET", "k", NOW, None, signature, now=NOW)  # the expiry second itself is too late
    # a tampered link whose expiry is also past is reported as tampered, not expired
    with pytest.raises(BadSignature):
        verify(SECRET, "GET", "k2", NOW, None, signature, now=NOW + 100)


def test_query_round_trip():
    query = signed_query(SECRET, "PUT", "a/b", NOW + 5, "na me&x=.zip")
    args = {k: v[0] for k, v in parse_qs(query, keep_blank_values=True).items()}
    assert set(args) == {"expires", "filename", "signature"}
    verify_query(SECRET, "PUT", "a/b", args, now=NOW)
    with pytest.raises(BadSignature):
        verify_query(SECRET, "GET", "a/b", args, now=NOW)
    no_name = {k: v[0] for k, v in parse_qs(signed_query(SECRET, "GET", "a/b", NOW + 5)).items()}
    assert "filename" not in no_name
    verify_query(SECRET, "GET", "a/b", no_name, now=NOW)
    with pytest.raises(BadSignature):  # adding a filename to a link signed without one
        verify_query(SECRET, "GET", "a/b", {**no_name, "filename": "evil.html"}, now=NOW)


def test_empty_secret_is_refused():
    with pytest.raises(ValueError):
        sign("", "GET", "k", NOW, None)
