"""The tiny bank the client and simulator tests share: a 4-ary tree of three levels with blocks
of 12, 6 and 3 KiB (bf16), small enough to materialize in milliseconds."""

import memsim

ANCHOR = {"name": "tiny", "layers": 1, "d_model": 512, "d_ff": 1, "heads": 1, "head_dim": 1}
BANK_DICT = {"name": "tiny", "branching": 4, "levels": [4, 2, 1], "anchor": ANCHOR}
BANK = memsim.bank_from_dict(BANK_DICT)
