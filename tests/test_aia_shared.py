"""A CA Issuers URL is fetched once a run and shared by every target that needs it: a failure of that
one fetch must reach every waiting target as an error (recorded), never as a silent cancellation that
would end their measurements without a record."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from probe.netx.clock import Clock
from probe.observe.aia import IssuerFetcher, certificates_in


def test_a_failed_shared_fetch_is_an_error_for_every_target_waiting(monkeypatch: pytest.MonkeyPatch) -> None:
    fetcher = IssuerFetcher(timeout=1.0)

    async def broken(url: str, clock: Clock) -> dict[str, Any]:
        await asyncio.sleep(0.05)  # the other targets are waiting for it meanwhile
        raise RuntimeError("a bug while reading the issuer")

    monkeypatch.setattr(fetcher, "_fetch", broken)

    async def three_targets() -> list[BaseException | dict[str, Any]]:
        asks = [asyncio.create_task(fetcher.fetch("http://ca.example/issuer.p7c", Clock())) for _ in range(3)]
        return await asyncio.gather(*asks, return_exceptions=True)

    outcomes = asyncio.run(three_targets())
    assert [type(o).__name__ for o in outcomes] == ["RuntimeError"] * 3, outcomes


def test_a_cancelled_first_fetch_lets_the_next_target_fetch_it_itself(monkeypatch: pytest.MonkeyPatch) -> None:
    fetcher = IssuerFetcher(timeout=1.0)
    calls: list[int] = []

    async def slow(url: str, clock: Clock) -> dict[str, Any]:
        calls.append(1)
        await asyncio.sleep(0.2 if len(calls) == 1 else 0)
        return {"url": url, "failure": None}

    monkeypatch.setattr(fetcher, "_fetch", slow)

    async def first_cancelled() -> Any:
        first = asyncio.create_task(fetcher.fetch("http://ca.example/a.crt", Clock()))
        await asyncio.sleep(0.01)
        second = asyncio.create_task(fetcher.fetch("http://ca.example/a.crt", Clock()))
        await asyncio.sleep(0.01)
        first.cancel()  # that target's own deadline: only it is cancelled
        return await second

    assert asyncio.run(first_cancelled())["url"] == "http://ca.example/a.crt"
    assert len(calls) == 2


def test_a_body_cryptography_cannot_read_is_no_certificate() -> None:
    # A PKCS#7 ContentInfo that is not signedData (OID 1.2.840.113549.1.7.1, data): cryptography raises
    # UnsupportedAlgorithm, not ValueError; whatever the path serves, the fetch finds no certificate.
    not_signed_data = bytes.fromhex("300f06092a864886f70d010701a0020400")
    assert certificates_in(not_signed_data) == []
    assert certificates_in(b"\x00garbage") == []
