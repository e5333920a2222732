"""A small PyTorch network for tabular data: the trainer contract on a framework that is not
scikit-learn. Numeric features are standardised (a missing value becomes the mean, with a
flag column), categories are one-hot over the training split's values (unknown: all zeros);
two hidden layers; Adam on log loss (classification) or squared error (regression), with
early stopping on the validation loss; the spec's metric on the validation split is reported
each epoch, so Optuna can prune.

PyTorch is an optional extra (`pip install torch==2.13.0`): this module imports it only when
it trains or predicts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import mlflow
import numpy as np
import pandas as pd

if TYPE_CHECKING:  # the module is logged with the model: it loads where maestro is absent
    from maestro.training.custom import TrainingContext

PATIENCE = 5  # epochs without a better validation loss before training stops


@dataclass
class Encoding:
    """Raw feature frame to network input, learned from the training split."""

    numeric: list[str]
    means: np.ndarray
    scales: np.ndarray
    categories: dict[str, list[str]]

    @classmethod
    def fit(cls, frame: pd.DataFrame, numeric: list[str], categorical: list[str]) -> Encoding:
        values = frame[numeric].to_numpy(dtype=np.float64)
        means = np.nan_to_num(np.nanmean(values, axis=0)) if len(numeric) else np.zeros(0)
        scales = np.nan_to_num(np.nanstd(values, axis=0)) if len(numeric) else np.zeros(0)
        categories = {
            name: sorted(frame[name].dropna().astype(str).unique()) for name in categorical
        }
        return cls(numeric, means, np.where(scales > 0, scales, 1.0), categories)

    @property
    def width(self) -> int:
        return 2 * len(self.numeric) + sum(len(c) for c in self.categories.values())

    def transform(self, frame: pd.DataFrame) -> np.ndarray:
        # one object matrix, then columns out of it: taking a fresh frame's columns out one by
        # one costs about 30 µs each, most of a single row's answer
        wanted = [*self.numeric, *self.categories]
        if len(frame.columns) != len(wanted):  # a split's keys, time and target: left out
            frame = frame[wanted]
        position = {name: j for j, name in enumerate(frame.columns)}
        table = frame.to_numpy(dtype=object)
        values = table[:, [position[name] for name in self.numeric]].astype(np.float64)
        missing = np.isnan(values)
        scaled = np.where(missing, 0.0, (values - self.means) / self.scales)
        parts = [scaled, missing.astype(np.float64)]
        for name, known in self.categories.items():
            index = {value: code for code, value in enumerate(known)}
            # a dict lookup per value: pandas' Categorical costs about 1 ms a column per call
            codes = np.array(
                [
                    index.get(v if type(v) is str else _text(v), -1)
                    for v in table[:, position[name]]
                ],
                dtype=np.int64,
            )
            one_hot = np.zeros((len(frame), len(known)))
            seen = codes >= 0
            one_hot[np.flatnonzero(seen), codes[seen]] = 1.0
            parts.append(one_hot)
        return np.hstack(parts).astype(np.float32)


def _text(value: Any) -> str | None:
    """A category as the training split's values were kept (text; missing: None)."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    return value if isinstance(value, str) else str(value)


class TabularNetwork(mlflow.pyfunc.PythonModel):
    """The trained network as an MLflow pyfunc model: class probabilities (rows x 2) for
    classification, one value per row for regression."""

    def __init__(self, network: Any, encoding: Encoding, classification: bool, target_scale: tuple):
        self.network, self.encoding = network, encoding
        self.classification, self.target_scale = classification, target_scale

    def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> np.ndarray:
        import torch

        with torch.inference_mode():
            out = self.network(torch.from_numpy(self.encoding.transform(model_input)))
        raw = out.numpy()[:, 0].astype(np.float64)
        if self.classification:
            positive = 1.0 / (1.0 + np.exp(-raw))
            return np.column_stack([1.0 - positive, positive])
        mean, scale = self.target_scale
        return raw * scale + mean


def train(context: TrainingContext) -> TabularNetwork:
    """The trainer: hyperparameters `hidden` (units per layer), `learning_rate`, `epochs`,
    `dropout` and `batch_size`, each with a default."""
    import torch
    from torch import nn

    torch.manual_seed(context.seed)
    torch.set_num_threads(context.threads)
    spec, params = context.spec, context.params
    classification = spec.task == "binary_classification"
    numeric = [f.name for f in spec.features if f.type != "category"]
    encoding = Encoding.fit(context.train, numeric, spec.categorical_features)
    hidden, dropout = int(params.get("hidden", 64)), float(params.get("dropout", 0.1))
    network = nn.Sequential(
        nn.Linear(encoding.width, hidden),
        nn.ReLU(),
        nn.Dropout(dropout),
        nn.Linear(hidden, hidden),
        nn.ReLU(),
        nn.Linear(hidden, 1),
    )
    y = context.train[context.target].to_numpy(dtype=np.float64)
    target_scale = (0.0, 1.0) if classification else (float(y.mean()), float(y.std() or 1.0))

    def tensors(frame: pd.DataFrame) -> tuple[Any, Any]:
        target = (frame[context.target].to_numpy(dtype=np.float64) - target_scale[0]) / (
            target_scale[1]
        )
        features = torch.from_numpy(encoding.transform(frame))
        return features, torch.from_numpy(target.astype(np.float32)).unsqueeze(1)

    X, Y = tensors(context.train)
    Xv, Yv = tensors(context.valid)
    loss_of = nn.BCEWithLogitsLoss() if classification else nn.MSELoss()
    optimiser = torch.optim.Adam(network.parameters(), lr=float(params.get("learning_rate", 1e-3)))
    batch = int(params.get("batch_size", 256))
    best, best_state, waited = float("inf"), None, 0
    for epoch in range(int(params.get("epochs", 30))):
        network.train()
        order = torch.randperm(len(X))
        for start in range(0, len(X), batch):
            rows = order[start : start + batch]
            optimiser.zero_grad()
            loss_of(network(X[rows]), Y[rows]).backward()
            optimiser.step()
        network.eval()
        with torch.inference_mode():
            out = network(Xv)
            valid_loss = float(loss_of(out, Yv))
        if valid_loss < best:
            best, waited = valid_loss, 0
            best_state = {k: v.clone() for k, v in network.state_dict().items()}
        else:
            waited += 1
        if not context.final:
            raw = out.numpy()[:, 0].astype(np.float64)
            scores = 1.0 / (1.0 + np.exp(-raw)) if classification else raw * target_scale[1]
            scores = scores if classification else scores + target_scale[0]
            context.report(epoch, context.validation_metric(scores))  # may raise TrialPruned
        if waited >= PATIENCE:
            break
    if best_state is not None:
        network.load_state_dict(best_state)
    network.eval()
    return TabularNetwork(network, encoding, classification, target_scale)
