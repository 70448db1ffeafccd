"""A censorship probe: finds substituted TLS certificates, lying DNS and blocked connections."""

__version__ = "0.1.0"
SOFTWARE_NAME = "kz-probe"
