"""The DeepSpeed config of a stage, derived from the sweep file: one function, so the GPU benchmark and the
Ray Train workers build the exact same engine."""

from __future__ import annotations

from typing import Any


def deepspeed_config(*, zero_stage: int, micro_batch: int, grad_accum: int, world_size: int,
                     grad_clip: float, bf16: bool, offload_optimizer: bool = False,
                     offload_params: bool = False) -> dict[str, Any]:
    zero: dict[str, Any] = {"stage": zero_stage}
    if offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu"}
    if offload_params:
        zero["offload_param"] = {"device": "cpu"}
    if zero_stage == 3:
        # Lets the final export gather the shards into one consolidated state dict.
        zero["stage3_gather_16bit_weights_on_model_save"] = True
    return {
        "train_micro_batch_size_per_gpu": micro_batch,
        "gradient_accumulation_steps": grad_accum,
        "train_batch_size": micro_batch * grad_accum * world_size,
        "gradient_clipping": grad_clip,
        "zero_optimization": zero,
        "bf16": {"enabled": bf16},
        # We pass torch's AdamW; DeepSpeed's own CPU Adam would compile C++ for minutes on first use.
        "zero_force_ds_cpu_optimizer": False,
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }
