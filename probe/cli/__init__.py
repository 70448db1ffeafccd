"""The `probe` command line: the parser (`main`), the configuration file (`settings`), the
volunteer's consent (`consent`), and one module per command (`commands`).
"""
