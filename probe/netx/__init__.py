"""Network primitives: one TCP connect, one TLS handshake, one DNS question over UDP, TCP, DoT or
DoH, one bounded HTTP exchange, and the one classification of every failure into the vocabulary's
failure strings (`classify`). Each primitive records what it saw and judges nothing; `observe`
composes them into a target's measurement.
"""
