"""What ``precision=fp32`` means on a CUDA device: true IEEE fp32, not TF32.

This torch runs cuDNN convolutions in TF32 by default (``torch.backends.cudnn.conv.fp32_precision
== "tf32"``: inputs rounded to a 10-bit mantissa, about 1e-3 relative error per product) while
cuBLAS matmuls default to IEEE. A run that says fp32 should be fp32 in every layer, so the CUDA
reference of the CPU results matches them to fp32 rounding (``tests/test_layers.py``) and the
pair's two runs do the same arithmetic as on the CPU. bf16 runs are unaffected (autocast picks
the bf16 kernels; only the ops it leaves in fp32 see this setting).

``set_fp32_precision()`` sets it process-wide; call it before building or compiling a model
(``torch.compile`` reads it when it compiles). Pure torch: no I/O, no config.
"""

from __future__ import annotations

import torch

PRECISIONS = ("ieee", "tf32")


def _new_api() -> bool:
    """torch >= 2.9: per-backend ``fp32_precision`` (mixing it with ``allow_tf32`` is an error there)."""
    return hasattr(torch.backends.cudnn, "conv") and hasattr(torch.backends.cuda.matmul, "fp32_precision")


def _raw() -> dict[str, str]:
    if _new_api():
        return {"conv": torch.backends.cudnn.conv.fp32_precision, "matmul": torch.backends.cuda.matmul.fp32_precision}
    return {"conv": "tf32" if torch.backends.cudnn.allow_tf32 else "ieee",
            "matmul": "tf32" if torch.backends.cuda.matmul.allow_tf32 else "ieee"}


def fp32_precision() -> dict[str, str]:
    """The current fp32 precision of cuDNN convolutions and cuBLAS matmuls: ``ieee`` or ``tf32`` each
    (for the summary: what fp32 meant in this run)."""
    return {k: "ieee" if v == "none" else v for k, v in _raw().items()}  # "none": unset, the IEEE default


def set_fp32_precision(precision: str = "ieee") -> dict[str, str]:
    """fp32 convolutions and matmuls on CUDA in ``precision`` (``ieee``: true fp32, the default; ``tf32``:
    torch's default for convolutions). Returns the previous settings, which ``restore_fp32_precision`` puts
    back. Harmless without a GPU (the flags are process-wide)."""
    if precision not in PRECISIONS:
        raise ValueError(f"fp32 precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    before = _raw()
    _apply(precision, precision)
    return before


def restore_fp32_precision(settings: dict[str, str]) -> None:
    """Put back what ``set_fp32_precision`` returned."""
    _apply(settings["conv"], settings["matmul"])


def _apply(conv: str, matmul: str) -> None:
    if _new_api():
        torch.backends.cudnn.conv.fp32_precision = conv
        torch.backends.cuda.matmul.fp32_precision = matmul
    else:  # older torch: the legacy flags
        torch.backends.cudnn.allow_tf32 = conv == "tf32"
        torch.backends.cuda.matmul.allow_tf32 = matmul == "tf32"
