"""Observe: everything that touches the network for a measurement, recorded as raw facts.

Nothing here judges. Failures become the vocabulary's failure strings (`errors`), DNS is asked
over every transport (`dns`, `udpwire`), TCP and TLS keep the whole presented chain (`connect`),
HTTP is bounded (`http`), helpers are asked meanwhile (`helperclient`), and `measure` composes
them for one target.
"""
