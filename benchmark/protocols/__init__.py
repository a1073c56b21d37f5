"""The protocols that benchmark/pipeline.run runs: what a unit of work is, how it is scored, its schema.

- episodes.py: N-way K-shot episodes, one row per (method, shots, episode) (`bench run`);
- fixedk.py: K images per class, the whole test pool, one row per (method, shots, seed) (`bench fixedk`);
- craters.py: the CTX crater map, one row per (method, shots, smoothing, seed) (`bench craters run`).

A new protocol is a class of pipeline.Protocol in a module here, plus the command that parses its arguments
(benchmark/commands/) and calls pipeline.run with it.
"""
