"""Turn a finished (or partial) sweep into Phang et al.'s transfer tables and heatmaps.

`results` gathers trial records (MLflow first, trial directories as fallback) into a long frame, `transfer`
computes the delta-vs-`none` matrices from it, `intervals` adds bootstrap CIs over seeds, `heatmap` and
`tables` draw and print them, and `report` writes them all to a directory.
"""

from itt_sweep.analysis.heatmap import draw_heatmap, render_heatmap
from itt_sweep.analysis.intervals import TransferTable, transfer_table
from itt_sweep.analysis.report import read_matrix_csv, write_outputs, write_table
from itt_sweep.analysis.results import (
    find_parent_run,
    load_records,
    records_from_dirs,
    records_from_mlflow,
    to_frame,
)
from itt_sweep.analysis.transfer import absolute_matrix, paired_deltas, transfer_matrix

__all__ = [
    "TransferTable",
    "absolute_matrix",
    "draw_heatmap",
    "find_parent_run",
    "load_records",
    "paired_deltas",
    "read_matrix_csv",
    "records_from_dirs",
    "records_from_mlflow",
    "render_heatmap",
    "to_frame",
    "transfer_matrix",
    "transfer_table",
    "write_outputs",
    "write_table",
]
