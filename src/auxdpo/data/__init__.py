"""Preference data for the paper's evaluation protocol: loaders, validation and the ID split.

Loaders take a local path (``.json`` list, ``.jsonl``, ``.parquet``) or a hub name and return
``datasets.Dataset`` objects; ``auxdpo data check`` validates a file first. Submodules import
``datasets`` only when a loader runs.

* :mod:`auxdpo.data.ultrafeedback` — ``load_ultrafeedback`` (flat, H4 and RLHFlow schemas)
* :mod:`auxdpo.data.comparisons` — ``load_comparisons``: multi-comparison sets (RLHFlow,
  openbmb/UltraFeedback, scored-responses files) expanded into pairs, optional soft labels
* :mod:`auxdpo.data.stats` — ``comparison_stats``: responses per prompt, pairs per response
* :mod:`auxdpo.data.rewardbench2` — ``load_rewardbench2`` (best-of-N), ``rewardbench2_pairs``
* :mod:`auxdpo.data.mmlu_pro` — ``load_mmlu_pro`` (questions), ``mmlu_pro_pairs``
* :mod:`auxdpo.data.splits` — ``split_by_prompt`` (80/20, seeded, no prompt on both sides)
* :mod:`auxdpo.data.id_setting` — ``id_sets`` (split, then train/test pairs and test rows)
* :mod:`auxdpo.data.check` — ``check_file`` (what ``auxdpo data check`` prints)
* :mod:`auxdpo.data.schema` — ``DataFormatError``, ``Problem``, ``read_records``
"""

from auxdpo.data.check import FORMATS, CheckReport, check_file
from auxdpo.data.comparisons import MULTI_FORMATS, ExpansionOptions, load_comparisons
from auxdpo.data.id_setting import IDSets, id_sets
from auxdpo.data.mmlu_pro import format_mmlu_prompt, load_mmlu_pro, mmlu_pro_pairs
from auxdpo.data.rewardbench2 import load_rewardbench2, rewardbench2_pairs
from auxdpo.data.schema import DataFormatError, Problem, read_records
from auxdpo.data.splits import split_by_prompt
from auxdpo.data.stats import ComparisonStats, comparison_stats
from auxdpo.data.ultrafeedback import load_ultrafeedback

__all__ = ["FORMATS", "CheckReport", "check_file", "DataFormatError", "Problem", "read_records",
           "load_ultrafeedback", "load_rewardbench2", "rewardbench2_pairs", "load_mmlu_pro",
           "mmlu_pro_pairs", "format_mmlu_prompt", "split_by_prompt", "IDSets", "id_sets",
           "MULTI_FORMATS", "ExpansionOptions", "load_comparisons", "ComparisonStats",
           "comparison_stats"]
