"""The names and errors every layer shares: the bottom layer, importing nothing of paraphina."""
