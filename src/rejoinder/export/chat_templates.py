"""Chat templates that reproduce rejoinder's formats, for serving engines.

An engine (vLLM, llama.cpp) builds a prompt from OpenAI-style messages with a Jinja chat
template only. `chat_template(fmt)` writes one that lays the messages out as `fmt` lays
out turns, and `check_template` proves it on probe conversations before an export is
written: the ids the engine would feed the model must be the ids rejoinder makes.

- dialogpt: the persona, then every turn, each followed by the end-of-text token; a
  conversation with nothing yet starts from end-of-text;
- template: the persona's line, then "User: …\\nAgent: …\\nAgent:" with the format's role
  prefixes and separator;
- chat-template: the checkpoint's own template, given the messages as rejoinder gives
  them (system messages joined into one system prompt, the persona after it).

User and assistant messages keep their roles, in any order, as in rejoinder; empty
messages and those of other roles are skipped, and system messages are dropped by
formats that have no place for one. A template that refuses two messages of one role in
a row refuses them in the engine too (rejoinder joins them).
"""

from __future__ import annotations

import json

from rejoinder.errors import RejoinderError


def _lit(text: str) -> str:
    """A Jinja string literal of `text` (Jinja reads Python's backslash escapes)."""
    return json.dumps(text, ensure_ascii=False)


def _collect(system: str = "", persona: str = "") -> str:
    """Jinja that reads `messages` as rejoinder's `as_context` and `Format` do: the turns
    (non-empty user and assistant messages, in their roles), and `ns.system`: the system
    messages' text joined (or `system`, the format's own prompt), then `persona`."""
    joined = "ns.system ~ '\\n\\n' ~ p if ns.system else p"
    return (
        f"{{%- set ns = namespace(turns=[], systems=[], system={_lit(system)}) -%}}"
        "{%- for m in messages -%}{%- if m['content'] is string and m['content'] | trim -%}"
        "{%- if m['role'] in ['system', 'developer'] -%}"
        "{%- set ns.systems = ns.systems + [m['content']] -%}"
        "{%- elif m['role'] in ['user', 'assistant'] -%}"
        "{%- set ns.turns = ns.turns + [m] -%}{%- endif -%}"
        "{%- endif -%}{%- endfor -%}"
        "{%- if ns.systems -%}{%- set ns.system = ns.systems | join('\\n\\n') -%}{%- endif -%}"
        + (
            f"{{%- set p = {_lit(persona)} -%}}{{%- set ns.system = {joined} -%}}"
            if persona
            else ""
        )
        + "{%- set prompt = add_generation_prompt is defined and add_generation_prompt -%}"
    )


def chat_template(fmt) -> str:
    """A Jinja chat template that lays out OpenAI-style messages as `fmt` lays out turns.

    With `add_generation_prompt`, the rendering is what `fmt.encode` makes for the
    reply; without, a conversation that ends with the assistant's turn renders as
    `fmt.training_example` does (both as text: see `check_exportable` for the formats
    that have none).
    """
    from rejoinder.formats import ChatTemplateFormat, DialoGPTFormat, TemplateFormat

    persona = fmt.persona or ""
    if isinstance(fmt, DialoGPTFormat):
        return (
            _collect()
            + (f"{{{{ {_lit(persona)} ~ eos_token }}}}" if persona else "")
            + "{%- for t in ns.turns -%}{{ t['content'] ~ eos_token }}{%- endfor -%}"
            + ("" if persona else "{%- if prompt and not ns.turns -%}{{ eos_token }}{%- endif -%}")
        )
    if isinstance(fmt, TemplateFormat):
        user, agent, sep = _lit(fmt.user), _lit(fmt.bot), _lit(fmt.separator)
        return (
            _collect()
            + (f"{{{{ {_lit(persona)} ~ {sep} }}}}" if persona else "")
            + "{%- for t in ns.turns -%}"
            + f"{{{{ ({agent} if t['role'] == 'assistant' else {user}) ~ ' ' ~ t['content']"
            + f" ~ {sep} }}}}"
            + f"{{%- endfor -%}}{{%- if prompt -%}}{{{{ {agent} }}}}{{%- endif -%}}"
        )
    if isinstance(fmt, ChatTemplateFormat):
        # The checkpoint's own template, rendered on the messages rejoinder renders it on.
        return (
            _collect(fmt.system or "", persona)
            + "{%- set ns.messages = [{'role': 'system', 'content': ns.system}] "
            + "if ns.system else [] -%}"
            + "{%- for t in ns.turns -%}{%- set ns.messages = ns.messages + "
            + "[{'role': t['role'], 'content': t['content']}] -%}"
            + "{%- endfor -%}{%- set messages = ns.messages -%}"
            + "{{ '' }}"  # a variable tag ends the preamble: trim_blocks leaves what follows
            + (fmt.template or fmt.tokenizer.chat_template)
        )
    raise RejoinderError(f"the {fmt.name} format has no chat template")


PROBES = [["Hello"], ["Hi!", "Hello, how are you?"], ["(Hi) there.", "...Hello!", "Why?"]]
"""Conversations an export must lay out exactly as rejoinder does, before it is written
(roles alternating back from the reply)."""
ROLE_PROBES = [
    [("user", "Hi!"), ("user", "Are you there?"), ("assistant", "Yes.")],
    [("assistant", "Welcome! How can I help?"), ("user", "Hello")],
]
"""The same for roles that do not alternate (where the template takes them)."""


def check_template(fmt, template: str, engine: str = "the engine") -> None:
    """Refuses a format whose layout an engine cannot reproduce from `template`.

    An engine renders the whole prompt as one text and tokenizes it at once, where
    rejoinder tokenizes each turn and each marker apart: a separator such as "\\n\\n"
    is one token alone but two before a role name, and the ids then differ.
    """
    tok = fmt.tokenizer
    alternating = [
        [("assistant" if (len(turns) - i - (0 if g else 1)) % 2 == 0 else "user", t)
         for i, t in enumerate(turns)]
        for turns in PROBES for g in (True, False)
    ]  # fmt: skip
    probes = [(said, True) for said in alternating] + [(said, False) for said in ROLE_PROBES]
    for said, must in probes:
        messages = [{"role": role, "content": text} for role, text in said]
        for generation in (True, False):
            if not generation and said[-1][0] != "assistant":
                continue  # a training example ends in the reply
            want = (fmt.encode if generation else fmt.training_example)(messages).input_ids
            try:
                got = tok.apply_chat_template(
                    messages, chat_template=template, add_generation_prompt=generation,
                    return_dict=False,
                )  # fmt: skip
            except Exception:
                if must:
                    raise
                continue  # the template refuses these roles, in the engine as here
            if got != want:
                raise RejoinderError(
                    f"{engine} tokenizes a prompt as one text, and this {fmt.name} format's "
                    f"markers then become other tokens: {tok.decode(want)!r} is "
                    f"{want} to rejoinder but {got} to the engine. Train in a format whose "
                    'markers stand apart (e.g. the template format with separator "\\n")'
                )
