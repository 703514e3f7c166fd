"""Training pairs from a named data format: what ``dataset_format`` of ``auxdpo train`` loads.

``ultrafeedback`` reads pairwise rows as they are (flat, H4 or RLHFlow schema, one pair per
row); the multi-comparison formats of :mod:`auxdpo.data.comparisons` expand every row into its
pairs, with the tie rule and optional soft labels of :class:`ExpansionOptions`.
"""

from __future__ import annotations

import os

from auxdpo.data.comparisons import MULTI_FORMATS, PREF_PROB, ExpansionOptions

__all__ = ["TRAIN_FORMATS", "load_training_pairs"]

TRAIN_FORMATS = ("ultrafeedback",) + MULTI_FORMATS


def load_training_pairs(source: str | os.PathLike, fmt: str, *, split: str | None = None,
                        config: str | None = None, options: ExpansionOptions | None = None,
                        pref_prob_column: str | None = PREF_PROB):
    """Pairs (``prompt``, ``chosen``, ``rejected``, ... ) of ``source`` read as ``fmt``.

    ``split`` (hub names only) defaults to each loader's own (``train``; ``train_prefs`` for
    ``HuggingFaceH4/ultrafeedback_binarized``).

    Soft labels land in ``pref_prob_column`` (the trainer's soft-label column); asking for
    them with that column switched off (None), or from ``ultrafeedback`` rows (which carry no
    tie rule or temperature here), is an error rather than a silent hard-label run.
    """
    if fmt not in TRAIN_FORMATS:
        raise ValueError(f"dataset_format must be one of {', '.join(TRAIN_FORMATS)}; "
                         f"got {fmt!r}")
    options = options or ExpansionOptions()
    if fmt == "ultrafeedback":
        if options.labels_column:
            raise ValueError("dataset_format ultrafeedback: a soft-label temperature or "
                             "ties 'half' needs a scored format (rlhflow-ultrafeedback, "
                             "openbmb-ultrafeedback or scored-responses)")
        from auxdpo.data.ultrafeedback import load_ultrafeedback

        if config is not None:
            raise ValueError("dataset_format ultrafeedback takes no dataset_config")
        return load_ultrafeedback(source, split)
    from auxdpo.data.comparisons import load_comparisons

    pairs = load_comparisons(source, fmt, split=split or "train", options=options,
                             config=config)
    if options.labels_column and pref_prob_column != PREF_PROB:
        if pref_prob_column is None:
            raise ValueError("soft labels (a temperature, or ties 'half') need "
                             "pref_prob_column; it is null")
        pairs = pairs.rename_column(PREF_PROB, pref_prob_column)
    return pairs
