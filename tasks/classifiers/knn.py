"""DINO's temperature-weighted cosine k-NN (faiss or torch backend)."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .arrays import check_2d, like_input, resolve_device, to_numpy, to_tensor


class KNNClassifier:
    """DINO's weighted k-NN on cosine similarity.

    Features are L2-normalised inside (no centring). For each query: the top-k training samples by
    cosine similarity s, each voting for its class with weight exp(s / temperature); the prediction
    is the class with the largest summed vote and ``predict_proba`` the votes normalised to sum 1.
    ``k`` is clipped to the number of training samples.

    backend="faiss": exact ``faiss.IndexFlatIP`` (a GPU index only if ``faiss.get_num_gpus() > 0``
    and ``device`` is CUDA). backend="torch": matmul + topk over query chunks of ``batch_size``
    rows, so memory stays at ``batch_size × n_train``.
    """

    def __init__(self, k: int = 20, temperature: float = 0.07, backend: str = "faiss",
                 device: Any = None, batch_size: int = 1024):
        self.k = k
        self.temperature = temperature
        self.backend = backend
        self.device = device
        self.batch_size = batch_size

    @staticmethod
    def _normalize(X: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.normalize(X, dim=1)

    def fit(self, X: Any, y: Any) -> "KNNClassifier":
        if self.backend not in ("faiss", "torch"):
            raise ValueError(f"backend must be 'faiss' or 'torch', got {self.backend!r}")
        if self.k < 1 or self.temperature <= 0:
            raise ValueError("k must be >= 1 and temperature > 0")
        check_2d(X)
        self._device = resolve_device(self.device, X)
        self.classes_, y_idx = np.unique(to_numpy(y).reshape(-1), return_inverse=True)
        self._train = self._normalize(to_tensor(X, self._device, torch.float32)).contiguous()
        self._y = torch.as_tensor(y_idx.reshape(-1), dtype=torch.long, device=self._device)
        if self._train.shape[0] != self._y.shape[0]:
            raise ValueError("X and y have different numbers of samples")
        self.k_ = min(self.k, self._train.shape[0])
        self._index = None
        if self.backend == "faiss":
            import faiss

            d = self._train.shape[1]
            if self._device.type == "cuda" and faiss.get_num_gpus() > 0:
                self._faiss_res = faiss.StandardGpuResources()
                self._index = faiss.GpuIndexFlatIP(self._faiss_res, d)
            else:
                self._index = faiss.IndexFlatIP(d)
            self._index.add(np.ascontiguousarray(self._train.cpu().numpy(), dtype=np.float32))
        return self

    def kneighbors(self, X: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """(cosine similarities, training indices), both [M, k_], most similar first."""
        if not hasattr(self, "_train"):
            raise RuntimeError("KNNClassifier is not fitted yet; call fit() first")
        Q = self._normalize(to_tensor(X, self._device, torch.float32))
        if self.backend == "faiss":
            sims, idx = self._index.search(np.ascontiguousarray(Q.cpu().numpy()), self.k_)
            return (torch.from_numpy(sims).to(self._device),
                    torch.from_numpy(idx).to(self._device, torch.long))
        sims, idx = [], []
        for s in range(0, Q.shape[0], self.batch_size):
            sv, iv = torch.topk(Q[s:s + self.batch_size] @ self._train.T, self.k_, dim=1)
            sims.append(sv)
            idx.append(iv)
        if not sims:
            return (torch.empty(0, self.k_, device=self._device),
                    torch.empty(0, self.k_, dtype=torch.long, device=self._device))
        return torch.cat(sims), torch.cat(idx)

    def _votes(self, X: Any) -> torch.Tensor:
        sims, idx = self.kneighbors(X)
        # exp(s/T) up to a per-row factor (cancels in the normalised votes; no overflow for small T)
        weights = (sims - sims[:, :1]).div_(self.temperature).exp_()
        votes = torch.zeros(sims.shape[0], len(self.classes_), device=sims.device)
        return votes.scatter_add_(1, self._y[idx], weights)

    def predict_proba(self, X: Any) -> Any:
        votes = self._votes(X)
        return like_input(votes / votes.sum(dim=1, keepdim=True), X)

    def predict(self, X: Any) -> Any:
        pred = self.classes_[self._votes(X).argmax(dim=1).cpu().numpy()]
        return torch.as_tensor(pred, device=X.device) if isinstance(X, torch.Tensor) else pred

    def score(self, X: Any, y: Any) -> float:
        return float(np.mean(to_numpy(self.predict(X)) == to_numpy(y).reshape(-1)))
