"""The control vantage (`probe helper serve`), an HTTPS JSON API on a server outside the censored network.

For a target a probe asks about, the helper resolves it, connects, handshakes with its SNI, fetches
its page, and answers with metadata only (addresses, failures, certificate fingerprints, HTTP status,
title and body length; never a page body). docs/helper.md holds its threat model. It must never
become an open proxy or a scanner of private networks:
- destinations are checked after resolution and only the checked addresses are connected to (no
  DNS rebinding); loopback, private, link-local, reserved and other special addresses are refused,
  the documentation ranges too unless `--allow-documentation-addresses` (the lab) is given;
- only the ports in `--ports` (80 and 443 by default); no redirects are followed;
- every step has a time bound, requests are small, concurrent work is capped, each client address
  has a rate limit, and an optional bearer token closes the door to everyone else;
- client addresses are used for the rate limit only, in memory, and never logged.
"""
