#!/usr/bin/env python3
"""Engines checked by the engines: `rejoinder export --for llama.cpp`, run by llama.cpp.

    .venv/bin/python scripts/check_llama_cpp.py [--cache build/llama-cpp] [--keep]
                                                [--no-llama-server] [--strict]

Not part of `make test`: the first run compiles llama.cpp twice (minutes; cached after):

1. llama-cpp-python (pinned: LLAMA_CPP_PYTHON) from the registry's source package, CPU
   only, into a virtualenv of its own under the cache (CACHE/venv, with its [server]
   extra), and llama.cpp's own C++ `llama-server` from the llama.cpp sources inside that
   same package (CACHE/bin/llama-server; the package ships only the libraries);
2. small checkpoints made offline and trained for a minute on the bundled Chit-Chat
   corpus until they say memorised replies, so that greedy replies end where the model
   ends them and the top token leads by a clear margin (random weights give near ties
   that float rounding can flip): dialogpt with GPT-2's vocabulary, dialogpt on a Mistral
   with a corpus BPE (the quickstart's kind), the template format, and a Llama talking
   ChatML with <|im_start|>/<|im_end|> special tokens;
3. each exported with `rejoinder export DIR --for llama.cpp --dtype float32`;
4. greedy replies to several contexts (1 to 3 turns, a system message, an unseen one)
   from rejoinder and from llama.cpp's APIs, compared as text:
     completion     Llama.create_completion on the prompt the file's template renders
     chat           Llama.create_chat_completion(messages), the file's own template
     chat+handler   the same, with the workaround below
     py-server      llama_cpp.server's /v1/chat/completions (same code as `chat`)
     py-server cmp  llama_cpp.server's /v1/completions on the rendered prompt
     llama-server   llama.cpp's C++ server, `--jinja`, /v1/chat/completions
   The prompt ids each engine builds are compared with rejoinder's too.

Exit status: 0 when every reply equals rejoinder's, or differs only by the known client
limitation below (which --strict counts as a failure too); 1 otherwise.

The known limitation (llama-cpp-python 0.3.x, not our template nor our metadata): the
chat handler that Llama makes from a GGUF's tokenizer.chat_template is a
Jinja2ChatFormatter with stop_token_ids=[the eos id] (llama.py, `Llama.__init__`), whose
stopping criterion `stop_on_last_token` returns `tokens[-1] in stop_token_ids`
(llama_chat_format.py, `Jinja2ChatFormatter.__call__`). `Llama.generate` calls it with
`self._input_ids[:sample_idx]` right after sampling a token and before that token is
appended: the ids seen so far, the prompt included, never the new token. A dialogpt
prompt ends with <|endoftext|>, the eos id, so the first check stops generation before
any token: an empty reply, completion_tokens 0, finish_reason "stop". Every other path
stops at the eos by `llama_vocab_is_eog` on the sampled token, as it should. The
workaround that keeps the chat API: give Llama a handler without that criterion,

    from llama_cpp.llama_chat_format import Jinja2ChatFormatter
    eos = llm.detokenize([llm.token_eos()], special=True).decode()
    llm.chat_handler = Jinja2ChatFormatter(
        template=llm.metadata["tokenizer.chat_template"], eos_token=eos, bos_token=eos,
        stop_token_ids=None,
    ).to_chat_handler()

or use create_completion on the rendered prompt, or llama.cpp's own llama-server --jinja.
The script prints the evidence (what the criterion is handed, against the prompt).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

LLAMA_CPP_PYTHON = "0.3.36"
"""The llama-cpp-python release checked (0.3.x; its sdist vendors llama.cpp's sources)."""
CMAKE_ARGS = "-DGGML_NATIVE=ON -DLLAVA_BUILD=OFF -DGGML_CCACHE=OFF"
"""A CPU build for this machine, without the multimodal library nobody here needs."""
SERVER_CMAKE_ARGS = [
    "-DCMAKE_BUILD_TYPE=Release",
    "-DBUILD_SHARED_LIBS=OFF",
    "-DGGML_NATIVE=ON",
    "-DGGML_CCACHE=OFF",
    "-DLLAMA_CURL=OFF",
    "-DLLAMA_BUILD_COMMON=ON",
    "-DLLAMA_BUILD_TOOLS=ON",
    "-DLLAMA_BUILD_SERVER=ON",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_BUILD_APP=OFF",
    # No web page: its assets come from npm or a download, and neither is reachable.
    "-DLLAMA_BUILD_UI=OFF",
    "-DLLAMA_USE_PREBUILT_UI=OFF",
]
MAX_NEW_TOKENS = 24
SYSTEM = "Answer in one short sentence."
CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
APIS = ["completion", "chat", "chat+handler", "py-server", "py-server cmp", "llama-server"]
KNOWN = "known client limitation: the chat stop check sees the prompt's final eos"
START = time.monotonic()


def say(message: str) -> None:
    """A progress line on stderr, stamped with the time since the start."""
    spent = int(time.monotonic() - START)
    print(f"[{spent // 60:2d}:{spent % 60:02d}] {message}", file=sys.stderr, flush=True)


# -- building llama.cpp into the cache ------------------------------------------------------


def run_logged(cmd: list[str], log: Path, label: str, **kwargs) -> None:
    """Runs `cmd` with its output in `log`, saying how far a compile has got (the
    "[12/140]" counters of ninja and scikit-build) every 15 seconds; on failure shows the
    log's tail and stops the script."""
    counter = re.compile(r"\[\s*(\d+)/(\d+)\]")
    started, shown = time.monotonic(), 0.0
    with open(log, "a", encoding="utf-8") as out:
        out.write(f"$ {' '.join(cmd)}\n")
        out.flush()
        proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            **kwargs,
        )
        for line in proc.stdout:
            out.write(line)
            step = counter.search(line)
            now = time.monotonic()
            if step and (now - shown >= 15 or step[1] == step[2]):
                say(f"  {label}: compiling {step[1]}/{step[2]} ({int(now - started)} s)")
                shown = now
        code = proc.wait()
    if code:
        tail = log.read_text(encoding="utf-8", errors="replace").splitlines()[-30:]
        print("\n".join(tail), file=sys.stderr)
        raise SystemExit(f"{label} failed (exit {code}); the whole log is {log}")
    say(f"  {label}: done in {int(time.monotonic() - started)} s")


def fetch_sdist(cache: Path) -> Path:
    """The registry's source package of llama-cpp-python (one download, kept in the
    cache: both builds below compile it)."""
    folder = cache / "sdist"
    found = sorted(folder.glob(f"llama_cpp_python-{LLAMA_CPP_PYTHON}.tar.gz"))
    if found:
        return found[0]
    say(f"downloading llama-cpp-python=={LLAMA_CPP_PYTHON}'s source package")
    folder.mkdir(parents=True, exist_ok=True)
    pip = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:"]
    subprocess.run([*pip, f"llama-cpp-python=={LLAMA_CPP_PYTHON}", "-d", str(folder)], check=True)
    return next(folder.glob("llama_cpp_python-*.tar.gz"))


def ensure_package(cache: Path) -> Path:
    """CACHE/venv with llama-cpp-python[server] built from source; returns its python.

    A virtualenv of its own rather than --target on the project's: the [server] extra
    brings its own pins (pydantic-settings, sse-starlette, starlette-context), and none
    of it may shadow the project's packages."""
    venv = cache / "venv"
    python = venv / "bin" / "python"
    stamp = venv / f".llama-cpp-python-{LLAMA_CPP_PYTHON}"
    if stamp.exists() and python.exists():
        say(f"llama-cpp-python {LLAMA_CPP_PYTHON}: cached in {venv}")
        return python
    sdist = fetch_sdist(cache)
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    say(f"building llama-cpp-python {LLAMA_CPP_PYTHON} (CMAKE_ARGS={CMAKE_ARGS!r}); a few minutes")
    env = {
        **os.environ,
        "CMAKE_ARGS": CMAKE_ARGS,
        "CMAKE_BUILD_PARALLEL_LEVEL": str(os.cpu_count() or 2),
    }
    # -v: scikit-build-core shows the compile only when pip is verbose (the progress).
    run_logged(
        [str(python), "-m", "pip", "install", "-v", "--no-cache-dir", f"{sdist}[server]"],
        cache / "build-llama-cpp-python.log",
        "llama-cpp-python",
        env=env,
    )
    stamp.write_text(CMAKE_ARGS + "\n")
    return python


def ensure_server(cache: Path) -> Path:
    """CACHE/bin/llama-server, compiled from the llama.cpp sources that the same source
    package vendors (so the C++ server and the Python bindings run the same llama.cpp)."""
    binary = cache / "bin" / "llama-server"
    stamp = cache / "bin" / f".llama-server-{LLAMA_CPP_PYTHON}"
    if stamp.exists() and binary.exists():
        say(f"llama-server (llama.cpp of llama-cpp-python {LLAMA_CPP_PYTHON}): cached")
        return binary
    sdist = fetch_sdist(cache)
    source = cache / "src"
    if not (source / "vendor" / "llama.cpp" / "CMakeLists.txt").exists():
        say("unpacking llama.cpp's sources from the source package")
        shutil.rmtree(source, ignore_errors=True)
        with tarfile.open(sdist) as tar:
            tar.extractall(cache / "unpack", filter="data")
        next((cache / "unpack").iterdir()).rename(source)
        shutil.rmtree(cache / "unpack")
    build = cache / "server-build"
    log = cache / "build-llama-server.log"
    generator = ["-G", "Ninja"] if shutil.which("ninja") else []
    say("building llama.cpp's llama-server (its target only); a few minutes more")
    configure = ["cmake", "-S", str(source / "vendor" / "llama.cpp"), "-B", str(build)]
    run_logged([*configure, *generator, *SERVER_CMAKE_ARGS], log, "llama-server (configure)")
    jobs = str(os.cpu_count() or 2)
    compile_ = ["cmake", "--build", str(build), "--target", "llama-server", "-j", jobs]
    run_logged(compile_, log, "llama-server")
    binary.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(build / "bin" / "llama-server", binary)
    stamp.write_text(" ".join(SERVER_CMAKE_ARGS) + "\n")
    return binary


# -- checkpoints ----------------------------------------------------------------------------


def chitchat_dialogues(count: int) -> list[list[str]]:
    """The first `count` Chit-Chat conversations whose first four turns are short (a
    sender's consecutive messages are one turn, as rejoinder's reader joins them)."""
    import chitchat_dataset  # the corpus rejoinder's quickstart trains on

    data = json.loads((Path(chitchat_dataset.__file__).parent / "dataset.json").read_text())
    out = []
    for conv in data.values():
        turns, sender = [], None
        for message in (m for group in conv["messages"] for m in group):
            text = " ".join(message["text"].split())
            if message["sender"] == sender:
                turns[-1] += " " + text
            else:
                turns.append(text)
                sender = message["sender"]
        turns = turns[:4]
        if len(turns) == 4 and all(0 < len(t.split()) <= 10 and t.isascii() for t in turns):
            out.append(turns)
            if len(out) == count:
                return out
    return out


def memorise(directory: Path, dialogues: list[list[str]], max_steps: int = 150) -> str:
    """Trains the checkpoint in `directory` on `dialogues` (whole batches, every turn)
    until it says them back (loss < 0.05), and saves it in place; returns a summary.

    A trained model's greedy reply ends where the model ends it, and its top token leads
    the next by a margin that no float rounding between torch and ggml can flip."""
    import torch

    from rejoinder import ConversationModel

    bot = ConversationModel.from_pretrained(directory, device="cpu")
    model, fmt = bot.model, bot.format
    rows = [fmt.training_example(d) for d in dialogues]
    width = max(len(r.input_ids) for r in rows)
    ids = torch.zeros((len(rows), width), dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        n = len(r.input_ids)
        ids[i, :n] = torch.tensor(r.input_ids)
        labels[i, :n] = torch.tensor(r.labels)
        mask[i, :n] = 1
    torch.manual_seed(0)
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    started = time.monotonic()
    steps = 0
    while steps < max_steps:
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        steps += 1
        if loss.item() < 0.05:
            break
    model.eval()
    bot.save_pretrained(directory, overwrite=True)
    return f"{steps} steps, loss {loss.item():.3f}, {time.monotonic() - started:.0f} s"


def chatml_directory(out: Path, tokenizer: str, corpus: list[str]) -> Path:
    """A Llama directory as a hub download has it: ChatML whose markers are special
    tokens, grouped-query attention, no rejoinder.json (so it talks in its template)."""
    import torch
    from transformers import AutoModelForCausalLM

    from rejoinder.modeling.architectures import model_config
    from rejoinder.tokenizers import build_tokenizer

    tok = build_tokenizer(tokenizer, corpus)
    tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tok.chat_template = CHATML
    config = model_config("llama", "tiny", len(tok), eos_token_id=tok.eos_token_id)
    config.num_key_value_heads = 1
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(out)
    tok.save_pretrained(out)
    return out


@dataclass
class Case:
    """One exported checkpoint: its name, its directories and the stop strings a client
    must send (the template format ends a turn in plain text)."""

    name: str
    checkpoint: Path
    export: Path
    stops: list[str] = field(default_factory=list)
    n_ctx: int = 1024


CASES = {
    # name: (family, format, tokenizer, format settings)
    "gpt2 dialogpt": ("gpt2", "dialogpt", "gpt2", {}),
    "mistral dialogpt bpe": ("mistral", "dialogpt", "bpe:2048", {}),
    "gpt2 template": ("gpt2", "template", "bpe:2048", {}),
    "llama chatml": ("llama", "chat-template", "gpt2", {}),
}
"""GPT-2's vocabulary where its real merges matter (DialoGPT's own, and ChatML's
markers next to text), a corpus BPE like the quickstart's elsewhere (faster to train).
No qwen2: a qwen2 checkpoint's tokenizer reloads as transformers' Qwen2Tokenizer (its own
pre-tokenizer and NFC), which the export refuses as not GPT-2's byte-level BPE."""


def make_cases(work: Path, dialogues: list[list[str]], corpus: list[str]) -> list[Case]:
    """Makes, trains and exports each checkpoint of CASES under `work`."""
    from rejoinder import ConversationModel
    from rejoinder.cli import main as rejoinder
    from rejoinder.modeling import init_checkpoint

    cases = []
    for name, (arch, fmt, tokenizer, settings) in CASES.items():
        slug = name.replace(" ", "-")
        ckpt, export = work / "checkpoints" / slug, work / "exports" / slug
        if fmt == "chat-template":
            chatml_directory(ckpt, tokenizer, corpus)
        else:
            init_checkpoint(ckpt, size="tiny", tokenizer=tokenizer, format=fmt, arch=arch,
                            corpus=corpus, format_settings=settings, overwrite=True)  # fmt: skip
        say(f"  {name}: trained ({memorise(ckpt, dialogues)})")
        # The command the issue ran, in this process (no second interpreter start-up);
        # its "wrote …" line goes with the progress, away from the table.
        with contextlib.redirect_stdout(sys.stderr):
            argv = ["export", str(ckpt), "--for", "llama.cpp", "--dtype", "float32"]
            code = rejoinder([*argv, "--out", str(export), "--force"])
        if code:
            raise SystemExit(f"rejoinder export failed for {name} (exit {code})")
        bot = ConversationModel.from_pretrained(ckpt, device="cpu")
        cases.append(Case(name, ckpt, export, list(bot.format.stop_strings), bot.max_positions))
    return cases


# -- the contexts and rejoinder's replies ---------------------------------------------------


def messages(context: list) -> list[dict]:
    """OpenAI messages: mappings as they are, strings as user and assistant turns
    alternating back from the reply (the reply is the assistant's)."""
    turns = [t for t in context if isinstance(t, str)]
    out, k = [], 0
    for t in context:
        if isinstance(t, dict):
            out.append(t)
            continue
        out.append({"role": "assistant" if (len(turns) - k) % 2 == 0 else "user", "content": t})
        k += 1
    return out


def contexts(dialogues: list[list[str]]) -> list[tuple[str, list[dict]]]:
    """Contexts of one to three turns taken from the training dialogues (whose replies
    the models know), one with a system message, and one the models never saw."""
    d0, d1, d2 = dialogues[:3]
    system = {"role": "system", "content": SYSTEM}
    # Odd numbers of known turns: the user's turns are the ones the models learnt as the
    # user's (roles are counted back from the reply).
    return [
        ("1 turn", messages(d0[:1])),
        ("3 turns", messages(d1[:3])),
        ("system + 3 turns", messages([system, *d2[:3]])),
        ("unseen, 2 turns", messages(["Do you like pizza?", "Yes, with lots of cheese."])),
        ("system only", [system]),  # no turn yet: dialogpt's prompt is <|endoftext|> alone
    ]


def greedy_gap(bot, said: list[dict], steps: int) -> float:
    """The smallest lead of the top logit over the second along rejoinder's greedy reply:
    how far a float difference between torch and ggml would have to go to flip it."""
    import torch

    ids = list(bot.encode(said, steps).input_ids)
    stops, gaps = set(bot.format.stop_ids), []
    with torch.no_grad():
        for _ in range(steps):
            logits = bot.model(input_ids=torch.tensor([ids])).logits[0, -1].float()
            top = torch.topk(logits, 2)
            gaps.append(float(top.values[0] - top.values[1]))
            if int(top.indices[0]) in stops:
                break
            ids.append(int(top.indices[0]))
    return min(gaps)


def rejoinder_side(cases: list[Case], said: list[tuple[str, list[dict]]]) -> dict:
    """rejoinder's greedy reply, prompt ids and greedy margin for each case and context."""
    from rejoinder import ConversationModel

    out = {}
    for case in cases:
        bot = ConversationModel.from_pretrained(case.checkpoint, device="cpu")
        eos = bot.tokenizer.eos_token_id
        for label, msgs in said:
            out[case.name, label] = {
                "reply": bot.generate(msgs, preset="greedy", max_new_tokens=MAX_NEW_TOKENS),
                "ids": list(bot.encode(msgs, MAX_NEW_TOKENS).input_ids),
                "gap": greedy_gap(bot, msgs, MAX_NEW_TOKENS),
                "eos": eos,
            }
    return out


# -- the llama.cpp side (runs in CACHE/venv's python: `--worker JOB OUT`) -------------------

GREEDY = {"temperature": 0.0, "top_k": 1, "top_p": 1.0, "min_p": 0.0, "repeat_penalty": 1.0}
"""Greedy in every llama.cpp API (the chat handler's own default repeat_penalty is 1.1)."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(url: str, body: dict | None = None, timeout: float = 120) -> dict:
    """GET (no body) or POST a JSON body; the JSON answer, or {"error": …}."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data, {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return json.loads(answer.read() or b"{}")
    except urllib.error.HTTPError as e:
        return {"error": f"HTTP {e.code}: {e.read().decode(errors='replace')[:300]}"}
    except (urllib.error.URLError, OSError) as e:
        return {"error": str(e)}


def wait_ready(url: str, proc: subprocess.Popen, log: Path, seconds: float = 120) -> None:
    """Waits until `url` answers 200, or raises with the server's log tail."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        try:
            with urllib.request.urlopen(url, timeout=5) as answer:
                if answer.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    tail = log.read_text(errors="replace")[-2000:]
    raise RuntimeError(f"the server did not come up at {url}:\n{tail}")


def reply_of(answer: dict, chat: bool) -> dict:
    """What a completion or chat answer (a dict of OpenAI's shape) says."""
    if "error" in answer or not answer.get("choices"):
        return {"text": None, "error": str(answer.get("error", answer))[:300]}
    choice = answer["choices"][0]
    text = choice["message"].get("content") if chat else choice.get("text")
    usage = answer.get("usage") or {}
    return {
        "text": text or "",
        "finish": choice.get("finish_reason"),
        "tokens": usage.get("completion_tokens"),
        "prompt_tokens": usage.get("prompt_tokens"),
    }


def stop_check_probe(llm, prompt_ids: list[int]) -> dict:
    """What a stopping criterion is handed the first time `Llama.generate` calls it: the
    evidence for the empty chat reply (compare with the prompt)."""
    import llama_cpp

    seen = []

    def record(ids, logits):
        seen.append([len(ids), int(ids[-1])])
        return False

    criteria = llama_cpp.StoppingCriteriaList([record])
    llm.create_completion(prompt=prompt_ids, max_tokens=2, **GREEDY, stopping_criteria=criteria)
    return {"first_call": seen[0], "prompt_len": len(prompt_ids), "prompt_last": prompt_ids[-1]}


def python_api(case: dict, said: list, out: dict) -> None:
    """create_completion on the rendered prompt, create_chat_completion with the file's
    template, and the same with the workaround handler, for each context of `case`."""
    from llama_cpp import Llama
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    llm = Llama(case["gguf"], n_ctx=case["n_ctx"], n_threads=os.cpu_count(), seed=0, verbose=False)
    eos = llm.detokenize([llm.token_eos()], special=True).decode()
    template = llm.metadata["tokenizer.chat_template"]
    render = Jinja2ChatFormatter(template=template, eos_token=eos, bos_token=eos)
    # The workaround: the same template, with no stop check on ids (the eos still ends
    # the reply: _create_completion stops on llama_vocab_is_eog of each sampled token).
    handler = Jinja2ChatFormatter(
        template=template, eos_token=eos, bos_token=eos, stop_token_ids=None
    ).to_chat_handler()
    out["chat_format"] = llm.chat_format
    send = {"max_tokens": case["max_tokens"], "stop": case["stops"] or None, **GREEDY}
    for label, msgs in said:
        prompt = render(messages=msgs).prompt
        ids = llm.tokenize(prompt.encode(), add_bos=False, special=True)
        row = out["rows"][label] = {"prompt": prompt, "ids": ids}
        if "probe" not in out:
            out["probe"] = stop_check_probe(llm, ids)
        row["completion"] = reply_of(llm.create_completion(prompt=prompt, **send), False)
        llm.chat_handler = None  # the file's template, as Llama chose it (chat_format)
        row["chat"] = reply_of(llm.create_chat_completion(messages=msgs, **send), True)
        llm.chat_handler = handler
        row["chat+handler"] = reply_of(llm.create_chat_completion(messages=msgs, **send), True)
        llm.chat_handler = None
    llm.close()


def python_server(job: dict, work: Path, result: dict) -> None:
    """llama_cpp.server with every export (one process; "model" picks one): its chat
    endpoint, and its completion endpoint on the prompt the template rendered."""
    port, log = free_port(), work / "py-server.log"
    config = work / "py-server.json"
    models = [{"model": c["gguf"], "model_alias": c["name"], "n_ctx": c["n_ctx"], "verbose": False}
              for c in job["cases"]]  # fmt: skip
    config.write_text(json.dumps({"host": "127.0.0.1", "port": port, "models": models}))
    with open(log, "w") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "llama_cpp.server", "--config_file", str(config)],
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_ready(f"http://127.0.0.1:{port}/v1/models", proc, log)
        for case in job["cases"]:
            send = {"model": case["name"], "max_tokens": case["max_tokens"], **GREEDY}
            send["stop"] = case["stops"] or None
            for label, msgs in job["contexts"]:
                row = result["cases"][case["name"]]["rows"][label]
                chat = http(
                    f"http://127.0.0.1:{port}/v1/chat/completions", {**send, "messages": msgs}
                )
                row["py-server"] = reply_of(chat, True)
                plain = http(
                    f"http://127.0.0.1:{port}/v1/completions", {**send, "prompt": row["prompt"]}
                )
                row["py-server cmp"] = reply_of(plain, False)
    finally:
        proc.terminate()
        proc.wait(30)


def cpp_server(job: dict, work: Path, result: dict) -> None:
    """llama.cpp's llama-server --jinja, one process per export: the prompt its own
    Jinja engine renders (/apply-template, then /tokenize) and its chat endpoint."""
    for case in job["cases"]:
        port = free_port()
        log = work / f"llama-server-{case['name'].replace(' ', '-')}.log"
        base = f"http://127.0.0.1:{port}"
        with open(log, "w") as sink:
            argv = [job["llama_server"], "-m", case["gguf"], "--jinja", "-c", str(case["n_ctx"])]
            argv += ["--host", "127.0.0.1", "--port", str(port), "-np", "1"]
            argv += ["-t", str(os.cpu_count() or 2)]
            proc = subprocess.Popen(argv, stdout=sink, stderr=subprocess.STDOUT)
        try:
            wait_ready(f"{base}/health", proc, log)
            for label, msgs in job["contexts"]:
                row = result["cases"][case["name"]]["rows"][label]
                rendered = http(f"{base}/apply-template", {"messages": msgs})
                ask = {"content": rendered.get("prompt", ""), "parse_special": True}
                tokens = http(f"{base}/tokenize", {**ask, "add_special": False})
                row["server_ids"] = tokens.get("tokens") if "prompt" in rendered else None
                row["server_render_error"] = rendered.get("error")
                send = {"messages": msgs, "max_tokens": case["max_tokens"], **GREEDY}
                send.update(stop=case["stops"] or None, cache_prompt=False)
                chat = http(f"{base}/v1/chat/completions", send)
                row["llama-server"] = reply_of(chat, True)
        finally:
            proc.terminate()
            proc.wait(30)


def worker(job_file: str, out_file: str) -> None:
    """The llama.cpp side, in the cache's virtualenv: reads the job, writes the replies."""
    import llama_cpp

    job = json.loads(Path(job_file).read_text())
    work = Path(job_file).parent
    result = {"version": llama_cpp.__version__, "cases": {}, "skipped": {}}
    for case in job["cases"]:
        out = result["cases"][case["name"]] = {"rows": {}}
        python_api(case, job["contexts"], out)
        print(f"worker: {case['name']}: Python API done", file=sys.stderr, flush=True)
    try:
        python_server(job, work, result)
        print("worker: llama_cpp.server done", file=sys.stderr, flush=True)
    except Exception as e:  # report it in the table rather than lose the rest
        result["skipped"]["py-server"] = result["skipped"]["py-server cmp"] = str(e)[:500]
    if job.get("llama_server"):
        try:
            cpp_server(job, work, result)
            print("worker: llama-server done", file=sys.stderr, flush=True)
        except Exception as e:
            result["skipped"]["llama-server"] = str(e)[:500]
    else:
        result["skipped"]["llama-server"] = (
            "not built (--no-llama-server); llama-cpp-python ships no llama-server binary"
        )
    Path(out_file).write_text(json.dumps(result))


# -- comparing and reporting -----------------------------------------------------------------


def verdict(api: str, got: dict | None, ref: dict, row: dict) -> tuple[str, str]:
    """("ok" | "known" | "FAIL", why) for one API's reply against rejoinder's."""
    if got is None or got.get("text") is None:
        return "FAIL", (got or {}).get("error", "no answer")
    want = ref["reply"].strip()
    text = got["text"].strip()
    if text == want:
        return "ok", "equal" + (" (both empty: a weak check)" if not want else "")
    ends_in_eos = ref["ids"][-1:] == [ref["eos"]]
    if api in ("chat", "py-server") and ends_in_eos and not got.get("tokens"):
        return "known", f"{KNOWN} (0 tokens, finish {got.get('finish')})"
    if got.get("prompt_tokens") not in (None, len(ref["ids"])):
        return "FAIL", (
            f"prompt of {got['prompt_tokens']} tokens, rejoinder's has {len(ref['ids'])}"
        )
    ids = row.get("server_ids") if api == "llama-server" else row.get("ids")
    if ids is not None and ids != ref["ids"]:
        return "FAIL", "the engine's prompt ids differ from rejoinder's"
    at = next(
        (i for i, (a, b) in enumerate(zip(text, want, strict=False)) if a != b),
        min(len(text), len(want)),
    )
    tie = " (a near tie: float rounding)" if ref["gap"] < 1e-3 else ""
    return "FAIL", f"differs from character {at}{tie}"


def ids_note(ref: dict, row: dict) -> str:
    """Whether each engine's prompt ids are rejoinder's."""
    notes = []
    for who, ids in (("llama-cpp-python", row.get("ids")), ("llama-server", row.get("server_ids"))):
        if ids is None:
            if who == "llama-server" and row.get("server_render_error"):
                notes.append(f"{who}: template failed: {row['server_render_error'][:120]}")
            continue
        notes.append(f"{who} {'=' if ids == ref['ids'] else '!='} rejoinder")
    n = len(ref["ids"])
    return "prompt ids: " + ", ".join(notes) + f" ({n} id{'s' if n != 1 else ''})"


def report(cases: list[Case], said: list, refs: dict, result: dict) -> dict[str, int]:
    """Prints one block per (checkpoint, context), then a summary grid; returns counts."""
    counts = {"ok": 0, "known": 0, "FAIL": 0, "skipped": 0}
    grid = {}
    print(f"\nllama-cpp-python {result['version']}; greedy, at most {MAX_NEW_TOKENS} new tokens\n")
    for case in cases:
        res = result["cases"][case.name]
        probe = res.get("probe", {})
        print(
            f"== {case.name}  ({case.export / 'model.gguf'}; Llama chose "
            f"chat_format={res.get('chat_format')!r})"
        )
        if probe:
            (seen, last), n = probe["first_call"], probe["prompt_len"]
            what = (
                "the prompt alone: not the token just sampled"
                if seen == n
                else "more than the prompt"
            )
            print(
                f"   stop check probe: a stopping criterion is first handed {seen} ids ending "
                f"in {last}; the prompt is {n} ids ending in {probe['prompt_last']} ({what})"
            )
        for label, _ in said:
            ref, row = refs[case.name, label], res["rows"][label]
            print(f"-- {label}: {ids_note(ref, row)}; smallest greedy lead {ref['gap']:.2f}")
            print(f"   {'rejoinder':<14} {ref['reply']!r}")
            for api in APIS:
                if api in result["skipped"]:
                    status, why, text = "skipped", result["skipped"][api][:160], "-"
                else:
                    got = row.get(api)
                    status, why = verdict(api, got, ref, row)
                    text = repr((got or {}).get("text"))
                counts[status] += 1
                grid.setdefault((case.name, api), []).append(status)
                print(f"   {api:<14} {text:<44} {status}: {why}")
        print()
    summary(cases, grid)
    return counts


def summary(cases: list[Case], grid: dict) -> None:
    """A grid of checkpoints by API: how many contexts agree (k: known limitation)."""
    width = max(len(c.name) for c in cases) + 2
    print("summary (contexts equal / known limitation / failed / skipped):")
    print(" " * width + "".join(f"{api:>15}" for api in APIS))
    for case in cases:
        cells = []
        for api in APIS:
            s = grid[case.name, api]
            cell = (
                f"{s.count('ok')}/{len(s)}"
                + (f" k{s.count('known')}" if "known" in s else "")
                + (f" F{s.count('FAIL')}" if "FAIL" in s else "")
            )
            cells.append("skipped" if s.count("skipped") == len(s) else cell)
        print(f"{case.name:<{width}}" + "".join(f"{c:>15}" for c in cells))


# -- main ------------------------------------------------------------------------------------


def run_worker(
    python: Path, server: Path | None, work: Path, cases: list[Case], said: list
) -> dict:
    """Runs this file with `--worker` in the cache's python, where llama_cpp lives."""
    job = {
        "cases": [
            {
                "name": c.name,
                "gguf": str(c.export / "model.gguf"),
                "n_ctx": c.n_ctx,
                "stops": c.stops,
                "max_tokens": MAX_NEW_TOKENS,
            }
            for c in cases
        ],
        "contexts": said,
        "llama_server": str(server) if server else None,
    }
    (work / "job.json").write_text(json.dumps(job, indent=1))
    subprocess.run(
        [str(python), __file__, "--worker", str(work / "job.json"), str(work / "result.json")],
        check=True,
    )
    return json.loads((work / "result.json").read_text())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--cache",
        default="build/llama-cpp",
        type=Path,
        help="where the builds are kept (default: build/llama-cpp)",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the checkpoints, exports and logs in CACHE/work"
    )
    parser.add_argument(
        "--no-llama-server",
        action="store_true",
        help="skip building and checking llama.cpp's C++ llama-server",
    )
    parser.add_argument(
        "--strict", action="store_true", help="count the known client limitation as a failure"
    )
    parser.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(*args.worker)
        return 0
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    cache = args.cache.resolve()
    cache.mkdir(parents=True, exist_ok=True)
    python = ensure_package(cache)
    server = None if args.no_llama_server else ensure_server(cache)
    built = time.monotonic()
    work = cache / "work" if args.keep else Path(tempfile.mkdtemp(prefix="llama-cpp-check-"))
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        from transformers.utils import logging

        logging.set_verbosity_error()
        logging.disable_progress_bar()
        dialogues = chitchat_dialogues(8)
        corpus = [t for d in chitchat_dialogues(400) for t in d]
        say(f"making, training and exporting {len(CASES)} checkpoints in {work}")
        cases = make_cases(work, dialogues, corpus)
        said = contexts(dialogues)
        say("rejoinder's greedy replies")
        refs = rejoinder_side(cases, said)
        say("llama.cpp's replies (llama-cpp-python, llama_cpp.server, llama-server)")
        result = run_worker(python, server, work, cases, said)
        counts = report(cases, said, refs, result)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print(
        f"\n{counts['ok']} equal, {counts['known']} known limitation, {counts['FAIL']} "
        f"failed, {counts['skipped']} skipped; checks took {time.monotonic() - built:.0f} s "
        f"(after {built - START:.0f} s of build or cache look-up)"
    )
    failed = counts["FAIL"] + (counts["known"] if args.strict else 0)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
