"""Packet-level forensics (needs CAP_NET_RAW): where on the path the censor sits, and whether a
reset was injected. Optional: without the capability every step is recorded as skipped, with why,
and nothing else about a record changes. scapy is imported here only, lazily and quietly."""
