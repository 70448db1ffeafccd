"""Analyze: pure functions from recorded observations and catalogs to anomalies and a verdict.

No sockets and no I/O: catalogs, trust stores and AS tables arrive as objects that
`probe.loaders` read. Each stage has its rules (`dns`, `tcp`, `tls`, `http`); `verdict.judge`
combines them. The same record and catalogs always give the same judgement, so old logs can be
re-judged when a catalog grows.
"""
