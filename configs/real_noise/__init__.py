"""Protocols of the real-noise bench (`python -m bench.real_noise --config=...`).

One file per protocol: sidd_short.py, sidd_full.py (train and score on the SIDD pair) and
dnd.py (reuse the networks of a SIDD run on the DND crops). `bench_fields` holds the fields
every protocol has.
"""

import ml_collections


def bench_fields(part: str, out: str) -> ml_collections.ConfigDict:
    """The fields of every protocol; lists are comma-separated strings (easy to override)."""
    c = ml_collections.ConfigDict()
    c.part = part  # "sidd" (train + score on the SIDD pair) or "dnd" (reuse a SIDD run)
    c.out = out  # output folder (relative to the current folder)
    c.shared = ""  # data folder (sidd_pair/, sidd_noisy/, dnd_noisy/); "" = ../shared/data
    c.methods = "sasl,bsn"  # of sasl (BNN b=9), bsn (b=1), sasl_b5 (b=5, an experiment)
    c.seeds = "0"
    c.stage1_only = ""  # methods trained (or evaluated) for stage 1 only
    c.skip_bm3d = False
    return c
