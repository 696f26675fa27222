"""Turn a finished (or partial) sweep into Phang et al.'s transfer tables and heatmaps.

`results` gathers trial records (MLflow or trial directories) into a long frame, `transfer` computes the
delta-vs-`none` matrices from it, `heatmap` draws and writes them.
"""

from itt_sweep.analysis.heatmap import draw_heatmap, read_matrix_csv, render_heatmap, write_outputs
from itt_sweep.analysis.results import records_from_dirs, records_from_mlflow, to_frame
from itt_sweep.analysis.transfer import absolute_matrix, paired_deltas, transfer_matrix

__all__ = [
    "absolute_matrix",
    "draw_heatmap",
    "paired_deltas",
    "read_matrix_csv",
    "records_from_dirs",
    "records_from_mlflow",
    "render_heatmap",
    "to_frame",
    "transfer_matrix",
    "write_outputs",
]
