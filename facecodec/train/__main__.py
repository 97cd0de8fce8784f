"""`python -m facecodec.train --config C --data D --out RUN/`: the same as `facecodec train`,
in the form torchrun launches (`torchrun --nproc-per-node N -m facecodec.train ...`)."""

from __future__ import annotations

import sys

from facecodec.errors import OneLineParser
from facecodec.train.trainer import add_train_arguments, train_main


def main(argv: list[str] | None = None) -> int:
    p = OneLineParser(prog="facecodec train", description=__doc__)
    add_train_arguments(p)
    return train_main(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
