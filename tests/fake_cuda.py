"""`python -m llamachat` where torch.cuda says it sees GPUs that are not there: FAKE_CUDA_DEVICES is a
comma-separated count by RANK ("2,1": rank 0's machine shows 2, rank 1's shows 1). Only the
placement checks read it (tests/test_tp_placement.py): every run ends before anything touches a GPU."""

import os
import sys

import torch

counts = [int(n) for n in os.environ["FAKE_CUDA_DEVICES"].split(",")]
visible = counts[int(os.environ.get("RANK", "0"))]
torch.cuda.is_available = lambda: visible > 0
torch.cuda.device_count = lambda: visible

from llamachat.cli import main  # noqa: E402 - after torch.cuda is faked

sys.exit(main())
