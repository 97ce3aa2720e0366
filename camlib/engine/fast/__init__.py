"""The fast backends: each says whether it applies to a problem and then gives its reference's
quantity with less work (block-linear FC pass, stored zero reference, fast coalitions with fused
kernels, NNPACK stages)."""
