"""Which device a run trains on, and how much memory it has free. Torch loads on first use."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pdsweep.errors import PdsweepError

if TYPE_CHECKING:
    import torch

DeviceName = Literal["auto", "cpu", "cuda"]


def resolve_device(name: DeviceName) -> torch.device:
    """The torch device for ``--device``: ``auto`` is a GPU if torch sees one."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise PdsweepError("--device cuda was asked for, but torch sees no CUDA GPU; use --device cpu or auto.")
    if name not in ("cpu", "cuda"):
        raise PdsweepError(f"unknown device {name!r}; choose one of: auto, cpu, cuda.")
    return torch.device(name)


def free_memory_gb(device: torch.device) -> float | None:
    """Memory free for a training run on ``device``, in GB (MemAvailable on a CPU)."""
    import torch

    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0] / 1e9
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024 / 1e9
    except OSError:
        pass
    return None
