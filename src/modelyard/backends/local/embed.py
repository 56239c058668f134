"""sentence-transformers runtimes: embeddings, and rerank/score by bi-encoder or cross-encoder."""

from __future__ import annotations

import base64
import os
from typing import TYPE_CHECKING, Any

from ...catalog import Deployment
from ...errors import InvalidRequest
from ...protocols.openai import wire as oa
from ...types import Task
from ...protocols.openai.media import EmbeddingRequest, RerankRequest, ScoreRequest
from .batching import DynamicBatcher
from .runtime import LocalRuntime, installed

if TYPE_CHECKING:  # numpy comes with the [local] extra; a base install imports this module without it
    import numpy as np


def _quiet_offline() -> None:
    """Weights come from disk: no hub lookups, no progress bars in the server log."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


def _rerank_response(req: RerankRequest, model: str, scores: list[float], tokens: int) -> dict[str, Any]:
    order = sorted(range(len(scores)), key=lambda i: scores[i], reverse=True)[: req.top_n or len(scores)]
    results = []
    for i in order:
        item: dict[str, Any] = {"index": i, "relevance_score": float(scores[i])}
        if req.return_documents:
            item["document"] = req.documents[i]
        results.append(item)
    # `results` as Cohere and Jina name it, `data` as the job API's and vLLM's clients read it
    return {"id": oa.new_id("rerank"), "object": "list", "model": model, "results": results, "data": results,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}


def _score_response(model: str, scores: list[float], tokens: int) -> dict[str, Any]:
    return {"id": oa.new_id("score"), "object": "list", "model": model,
            "data": [{"index": i, "object": "score", "score": float(s)} for i, s in enumerate(scores)],
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}


class _STBase(LocalRuntime):
    def missing(self) -> str | None:
        if not installed("sentence_transformers"):
            return "sentence-transformers is not installed (pip install 'modelyard[local]')"
        if self.path is None or not self.path.exists():
            return f"model folder not found at {self.path}"
        return None

    def _count_tokens(self, model: Any, texts: list[str]) -> list[int]:
        enc = model.tokenizer(texts, add_special_tokens=True, truncation=True)
        return [len(ids) for ids in enc["input_ids"]]


class SentenceTransformersBackend(_STBase):
    """A bi-encoder: embeddings, and rerank/score as cosine similarity of normalized embeddings."""

    tasks = frozenset({Task.EMBEDDING, Task.RERANK, Task.SCORE})

    def __init__(self, deployment: Deployment) -> None:
        super().__init__(deployment)
        opts = deployment.config.options
        self.batcher: DynamicBatcher[str, tuple[np.ndarray, int]] = DynamicBatcher(
            self._encode_batch, max_items=int(opts.get("max_batch", 64)), max_wait=float(opts.get("batch_wait_ms", 2)) / 1000,
            max_burst=float(opts.get("batch_burst_ms", 20)) / 1000)

    def _load(self) -> Any:
        _quiet_offline()
        from sentence_transformers import SentenceTransformer

        return SentenceTransformer(str(self.path), device="cpu", local_files_only=True)

    async def _encode_batch(self, texts: list[str]) -> list[tuple[np.ndarray, int]]:
        model = await self.model()

        def work() -> list[tuple[np.ndarray, int]]:
            vectors = model.encode(texts, batch_size=len(texts), convert_to_numpy=True, normalize_embeddings=True,
                                   show_progress_bar=False)
            return list(zip(vectors, self._count_tokens(model, texts)))

        return await self.run(work)

    async def _vectors(self, texts: list[str]) -> tuple[np.ndarray, int]:
        import numpy as np

        async with self.admitted():
            pairs = await self.batcher.submit(texts)
        return np.stack([v for v, _ in pairs]), sum(n for _, n in pairs)

    async def embed(self, req: EmbeddingRequest, model: str) -> dict[str, Any]:
        import numpy as np

        texts = req.texts
        if texts is None:
            raise InvalidRequest(f"Model '{model}' takes text input, not token ids.", param="input")
        vectors, tokens = await self._vectors(texts)
        if req.dimensions is not None:
            native = vectors.shape[1]
            if req.dimensions > native:
                raise InvalidRequest(f"Model '{model}' makes {native}-dimensional embeddings; 'dimensions' can be at "
                                     f"most {native}.", param="dimensions")
            vectors = vectors[:, : req.dimensions]
            vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        data = []
        for i, v in enumerate(vectors.astype(np.float32)):
            emb: Any = base64.b64encode(v.tobytes()).decode() if req.encoding_format == "base64" else v.tolist()
            data.append({"object": "embedding", "index": i, "embedding": emb})
        return {"object": "list", "data": data, "model": model,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}

    async def rerank(self, req: RerankRequest, model: str) -> dict[str, Any]:
        vectors, tokens = await self._vectors([req.query, *req.texts])
        return _rerank_response(req, model, (vectors[1:] @ vectors[0]).tolist(), tokens)

    async def score(self, req: ScoreRequest, model: str) -> dict[str, Any]:
        import numpy as np

        pairs = req.pairs()
        vectors, tokens = await self._vectors([t for pair in pairs for t in pair])
        a, b = vectors[0::2], vectors[1::2]
        return _score_response(model, np.sum(a * b, axis=1).tolist(), tokens)


class CrossEncoderBackend(_STBase):
    """A cross-encoder folder on disk (sentence-transformers CrossEncoder): rerank and score."""

    tasks = frozenset({Task.RERANK, Task.SCORE})

    def _load(self) -> Any:
        _quiet_offline()
        from sentence_transformers import CrossEncoder

        return CrossEncoder(str(self.path), device="cpu", local_files_only=True)

    async def _predict(self, pairs: list[tuple[str, str]]) -> tuple[list[float], int]:
        async with self.admitted():
            model = await self.model()

            def work() -> tuple[list[float], int]:
                import numpy as np

                scores = model.predict(pairs, batch_size=32, show_progress_bar=False)
                enc = model.tokenizer([a for a, _ in pairs], [b for _, b in pairs], truncation=True)
                return [float(s) for s in np.atleast_1d(scores)], sum(len(x) for x in enc["input_ids"])

            return await self.run(work)

    async def rerank(self, req: RerankRequest, model: str) -> dict[str, Any]:
        scores, tokens = await self._predict([(req.query, d) for d in req.texts])
        return _rerank_response(req, model, scores, tokens)

    async def score(self, req: ScoreRequest, model: str) -> dict[str, Any]:
        scores, tokens = await self._predict(req.pairs())
        return _score_response(model, scores, tokens)
