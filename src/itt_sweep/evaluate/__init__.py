"""Stage 3, the model's side: completions for prompts, pass@k from verdict counts, and `ref_nll`.

Running the completions against tests is the executor's job (`itt_sweep.execution`); this package only talks
to the model and turns counts into metrics.
"""

from itt_sweep.evaluate.generation import GenerationConfig, generate_completions, truncate_at_stop
from itt_sweep.evaluate.passk import mean_pass_at_k, pass_at_k
from itt_sweep.evaluate.ref_nll import per_pair_nll, reference_nll

__all__ = [
    "GenerationConfig",
    "generate_completions",
    "mean_pass_at_k",
    "pass_at_k",
    "per_pair_nll",
    "reference_nll",
    "truncate_at_stop",
]
