"""DINO's temperature-weighted cosine k-NN (faiss or torch backend)."""
from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch

from lowshot.model_zoo.errors import LowshotWarning, MissingPackageError

from .arrays import check_2d, like_input, resolve_device, to_numpy, to_tensor

#: Largest query x reference similarity block the torch backend holds at once (float32). At ImageNet size
#: (50,000 queries x 12,811 references) a block is 1,024 queries (52 MB); against the whole ImageNet train set
#: (1,281,167 references, 3.9 GB of 768-d features on the device) it is 52 queries, so the device holds the
#: references, one block and the [queries, classes] votes: about 4.4 GB, well within an 80 GB card.
MAX_BLOCK_BYTES = 1 << 28


def import_faiss():
    """The faiss module, or a one-line error saying how to install it (faiss is a declared dependency, but a GPU
    install replaces faiss-cpu by faiss-gpu by hand, which can leave neither)."""
    try:
        import faiss
    except ImportError as e:
        raise MissingPackageError(
            f"the k-NN's faiss backend needs the faiss package ({e}): pip install faiss-cpu, or for GPU indexes "
            "faiss-gpu-cu12 in its place (pip install 'lowshot-bench[faiss-gpu]' after uninstalling faiss-cpu); "
            "KNNClassifier(backend='torch') needs no faiss") from None
    return faiss


def faiss_gpu_available(faiss) -> bool:
    """Whether this faiss build has GPU indexes and sees a GPU (faiss-cpu has no StandardGpuResources)."""
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


class KNNClassifier:
    """DINO's weighted k-NN on cosine similarity.

    Features are L2-normalised inside (no centring). For each query: the top-k training samples by
    cosine similarity s, each voting for its class with weight exp(s / temperature); the prediction
    is the class with the largest summed vote and ``predict_proba`` the votes normalised to sum 1.
    ``k`` is clipped to the number of training samples.

    backend="faiss": exact ``faiss.IndexFlatIP``; on a CUDA ``device`` a ``GpuIndexFlatIP`` (faiss-gpu). Where the
    installed faiss has no GPU support (faiss-cpu) the search on a CUDA device runs with the torch backend on that
    device instead, with a warning saying so (the same exact search: a CPU index would copy every feature to the host
    and search on the CPU, 10-100x slower). backend="torch": matmul + topk over query blocks of at most
    ``batch_size`` rows and ``MAX_BLOCK_BYTES`` of similarities, so memory stays bounded whatever the number of
    training samples. ``backend_`` says which search ran: "faiss-gpu", "faiss-cpu" or "torch".
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
        self._index, self.backend_ = None, "torch"
        if self.backend == "faiss":
            faiss = import_faiss()
            d = self._train.shape[1]
            if self._device.type != "cuda":
                self._index, self.backend_ = faiss.IndexFlatIP(d), "faiss-cpu"
            elif faiss_gpu_available(faiss):
                self._faiss_res = faiss.StandardGpuResources()
                self._index, self.backend_ = faiss.GpuIndexFlatIP(self._faiss_res, d), "faiss-gpu"
            else:
                warnings.warn("the installed faiss has no GPU support (faiss-cpu): the k-NN search on "
                              f"{self._device} runs with torch (matmul + top-k, the same exact search); for faiss's "
                              "GPU index install faiss-gpu-cu12 in place of faiss-cpu", LowshotWarning, stacklevel=2)
            if self._index is not None:
                self._index.add(np.ascontiguousarray(self._train.cpu().numpy(), dtype=np.float32))
        return self

    def block_rows(self) -> int:
        """Queries per similarity block of the torch search."""
        return max(1, min(self.batch_size, MAX_BLOCK_BYTES // (4 * max(1, self._train.shape[0]))))

    def kneighbors(self, X: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """(cosine similarities, training indices), both [M, k_], most similar first."""
        if not hasattr(self, "_train"):
            raise RuntimeError("KNNClassifier is not fitted yet; call fit() first")
        X = X if isinstance(X, torch.Tensor) else np.asarray(X)
        check_2d(X)
        if self._index is not None:
            Q = self._normalize(to_tensor(X, torch.device("cpu"), torch.float32))
            sims, idx = self._index.search(np.ascontiguousarray(Q.numpy()), self.k_)
            return (torch.from_numpy(sims).to(self._device),
                    torch.from_numpy(idx).to(self._device, torch.long))
        sims, idx, step = [], [], self.block_rows()
        for s in range(0, X.shape[0], step):  # queries go to the device one block at a time
            Q = self._normalize(to_tensor(X[s:s + step], self._device, torch.float32))
            sv, iv = torch.topk(Q @ self._train.T, self.k_, dim=1)
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
