"""`python -m facecodec.train --config C --data D --out RUN/`: the same as `facecodec train`,
in the form torchrun launches (`torchrun --nproc-per-node N -m facecodec.train ...`), with the
command line's one-line errors."""

from __future__ import annotations

import sys

from facecodec.cli import main

if __name__ == "__main__":
    sys.exit(main(command="train"))
