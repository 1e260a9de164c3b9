"""Multiple-choice accuracy with a bootstrap error bar, as a local `evaluate` module.

`evaluate.load("accuracy")` downloads its script from the Hub; this module is loaded by path instead
(`evaluate.load(medrlvr_trl.evaluation.MCQA_ACCURACY_PATH)`), so scoring works offline. Predictions
are option letters, with "" for a completion from which no letter could be read: those count as
wrong, never as dropped.
"""

import datasets
import evaluate
import numpy as np

from medrlvr_trl.stats import DEFAULT_RESAMPLES, DEFAULT_SEED, bootstrap_std

_DESCRIPTION = """
Share of questions whose predicted option letter equals the gold letter, plus the standard deviation
of that share over bootstrap resamples of the questions (Med-RLVR, Figure 3 error bars).
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (list of str): predicted option letters; "" when no letter was found.
    references (list of str): gold option letters.
    n_resamples (int): bootstrap resamples (default 1000).
    seed (int): seed of the bootstrap draw (default 0).
Returns:
    accuracy (float), accuracy_std (float), n (int)
Examples:
    >>> metric = evaluate.load("medrlvr_trl/metrics/mcqa_accuracy")
    >>> metric.compute(predictions=["A", "", "C"], references=["A", "B", "D"])["accuracy"]
    0.3333333333333333
"""

_CITATION = """
@article{zhang2025medrlvr,
  title={Med-RLVR: Emerging Medical Reasoning from a 3B base model via Reinforcement Learning},
  author={Zhang, Sheng and Liu, Qianchu and Qin, Guanghui and Naumann, Tristan and Poon, Hoifung},
  journal={arXiv preprint arXiv:2502.19655},
  year={2025}
}
"""


class McqaAccuracy(evaluate.Metric):
    """Exact match of option letters, with a seeded bootstrap standard deviation."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
            ),
        )

    def _compute(
        self, predictions, references, n_resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED
    ) -> dict:
        if len(predictions) == 0:
            raise ValueError("mcqa_accuracy: no predictions to score")
        for row, gold in enumerate(references):
            if not gold:
                raise ValueError(
                    f"mcqa_accuracy: reference {row} is empty; every question needs a gold letter"
                )
        hits = np.asarray([p == r for p, r in zip(predictions, references, strict=True)], dtype=np.float64)
        return {
            "accuracy": float(hits.mean()),
            "accuracy_std": bootstrap_std(hits, n_resamples=n_resamples, seed=seed),
            "n": int(hits.size),
        }
