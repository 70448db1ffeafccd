"""Connections to one address, recorded with their purpose, and the contrasts that make a TLS
observation worth judging.

One decision is taken while observing, because it decides what else to observe: when a handshake
fails or presents a chain that does not validate, the same address is asked again with a control
SNI (and, if the control reached the server while the name was cut, the name once more), so that
analysis can tell a name-triggered block from a broken site or one lost packet. An invalid chain is
first completed from its AIA URL, as browsers do, and the machine's own store gives a second opinion.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from probe.netx.connect import Stream, open_tcp, open_tls
from probe.netx.wire import Packets
from probe.observe.aia import complete_chain
from probe.observe.config import Visit
from probe.vocabulary.observations import TlsHandshake
from probe.vocabulary.purposes import Purpose


@dataclass(frozen=True)
class Purposes:
    """How the records of one hop are labelled: the target itself (hop 0) or a redirect hop."""

    main: Purpose
    control: Purpose
    retry: Purpose
    minting: Purpose
    hop: int | None = None


TARGET = Purposes(Purpose.TARGET, Purpose.CONTROL_SNI, Purpose.TARGET_RETRY, Purpose.MINTING)


def redirect_hop(index: int) -> Purposes:
    return Purposes(Purpose.REDIRECT, Purpose.REDIRECT_CONTROL_SNI, Purpose.REDIRECT_RETRY, Purpose.REDIRECT_MINTING,
                    index)  # fmt: skip


def minting_name(server_name: str) -> str:
    """A name that cannot exist (RFC 6761's `.invalid`) under the target's own name, random each
    time: no honest server holds a certificate naming it, and an interceptor that bumps every
    name, or every name under the target's, is asked for one."""
    return f"{secrets.token_hex(6)}.{server_name.rstrip('.')}.invalid"


async def open_connection(
    address: str,
    port: int,
    use_tls: bool,
    server_name: str | None,
    purpose: Purpose,
    visit: Visit,
    hop: int | None = None,
) -> tuple[Stream | None, TlsHandshake | None]:
    """Connect (and handshake, for TLS), recording each step with its purpose.

    Returns the stream to speak HTTP over (None if a step failed) and the handshake observed."""
    config, clock, draft = visit.config, visit.clock, visit.draft
    wires: list[Packets] = []
    sock, tcp = await open_tcp(address, port, visit.deadline.step(), clock, config.own_addresses, visit.watch,
                               purpose=purpose, hop=hop, on_wire=wires.append)  # fmt: skip
    draft.add_tcp(tcp, wires[0] if wires else None)
    if sock is None:
        return None, None
    if not use_tls:
        return Stream(sock), None
    tls, handshake = await open_tls(sock, address, port, server_name, visit.deadline.step(), clock, purpose=purpose,
                                    hop=hop)  # fmt: skip
    draft.tls_handshakes.append(handshake)
    return tls, handshake


def _reached_server(handshake: TlsHandshake | None) -> bool:
    return handshake is not None and handshake.reached_server


def _close(stream: Stream | None) -> None:
    if stream is not None:
        stream.close()


async def connect_with_contrast(
    address: str,
    port: int,
    use_tls: bool,
    server_name: str | None,
    purposes: Purposes,
    visit: Visit,
) -> tuple[Stream | None, TlsHandshake | None]:
    """`open_connection`, plus the control SNI, a retry, AIA completion and the OS store's opinion."""
    config, started = visit.config, visit.started
    conn, handshake = await open_connection(address, port, use_tls, server_name, purposes.main, visit, purposes.hop)
    if handshake is None:
        return conn, handshake

    async def ask_control() -> TlsHandshake | None:
        if not config.control_sni or server_name is None:  # an IP literal has no name to contrast
            return None
        control_conn, control = await open_connection(
            address, port, True, config.control_sni, purposes.control, visit, purposes.hop
        )
        _close(control_conn)
        return control

    if handshake.failure is not None:
        control = await ask_control()
        if _reached_server(control) and handshake.alert is None:
            # The server answers the control name while the target's was cut: once more, so that
            # one lost packet is not called a block.
            conn, handshake = await open_connection(
                address, port, True, server_name, purposes.retry, visit, purposes.hop
            )
            failed_again = handshake is not None and handshake.failure is not None and handshake.alert is None
            if failed_again and not visit.deadline.expired:
                await ask_control()  # and the control once more (the sandwich): a censor's block that outlives the name
        return conn, handshake

    chain, name = list(handshake.peer_certificates), server_name or address
    valid = config.roots.validates(chain, name, started)
    if not valid and config.issuer_fetcher is not None:
        fetches = await complete_chain(chain, config.issuer_fetcher, visit.clock)
        handshake = visit.draft.update_handshake(handshake, aia_fetches=tuple(fetches))
        fetched = [der for fetch in fetches for der in fetch.certificates]
        valid = bool(fetched) and config.roots.validates(chain + fetched, name, started)
    if not valid:
        if config.os_store is not None:
            # Machine state, not a judgement: whether this machine's own store trusts the chain.
            opinion = config.os_store.validates(chain, name, started)
            handshake = visit.draft.update_handshake(handshake, os_store_valid=opinion)
        await ask_control()
        if server_name is not None and config.minting_test:
            # The minting test: does something at this address issue a certificate for any name asked?
            minted_conn, _ = await open_connection(
                address, port, True, minting_name(server_name), purposes.minting, visit, purposes.hop
            )
            _close(minted_conn)
    return conn, handshake
