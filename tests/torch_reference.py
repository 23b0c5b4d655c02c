"""Imports of the PyTorch reference packages (pytorch-fid, torch-fidelity) for the parity tests, on the CPU.

PyPI's torchvision wheel that pytorch-fid pulls beside the CPU build of torch 2.13 is linked against CUDA and
fails at import in torchvision/_meta_registrations.py ("operator torchvision::nms does not exist"). That module
only registers the detection operators' meta kernels, which nothing in FID, KID or IS uses: an empty stand-in
lets torchvision's model code and the reference packages import and run on the CPU.
"""

import sys
import types

sys.modules.setdefault("torchvision._meta_registrations", types.ModuleType("torchvision._meta_registrations"))

import torch  # noqa: E402
import pytorch_fid.inception  # noqa: E402
import pytorch_fid.fid_score  # noqa: E402
import torch_fidelity.metric_kid  # noqa: E402
import torch_fidelity.metric_isc  # noqa: E402

__all__ = ["torch", "pytorch_fid", "torch_fidelity"]
