"""A run: the targets measured concurrently (`execute`), each record judged and written by the
recorder process (`recorder`), one run at a time (`lock`), interrupted cleanly (`signals`), its
progress shown (`progress`).
"""
