"""A command agent that talks to its model through spawn's gateway with the official SDKs
(crates/spawn-cli/tests/suite/model.rs runs it inside each runtime). It prints one line per
check, and then everything of the sandbox where a leaked key could be: the environment,
every process's environment and command line, the small files it can read, and the
gateway's answers and error bodies. The test looks for the real key (and the redaction
marker that would replace it) in all of it."""

import glob
import os
import sys

mode = sys.argv[1]
model = os.environ["SPAWN_MODEL"]
seen = []  # everything the gateway said, for the leak search


def dump_sandbox():
    out = ["ENV " + repr(sorted(os.environ.items()))]
    for d in glob.glob("/proc/[0-9]*"):
        for f in ("environ", "cmdline"):
            try:
                with open(f"{d}/{f}", "rb") as fh:
                    out.append(f"PROC {d}/{f} " + repr(fh.read()))
            except OSError:
                pass
    for root in ("/etc", "/run", "/tmp", "/workspace", "/home", "/root", "/var"):
        for dirpath, _, files in os.walk(root):
            for name in files:
                p = os.path.join(dirpath, name)
                try:
                    if os.path.getsize(p) <= 1 << 20:
                        with open(p, "rb") as fh:
                            out.append(f"FILE {p} " + repr(fh.read()))
                except OSError:
                    pass
    return out


if mode == "anthropic":
    import anthropic

    c = anthropic.Anthropic(max_retries=0)
    m = c.messages.create(model=model, max_tokens=50, messages=[{"role": "user", "content": "hi"}])
    seen.append(m.model_dump_json())
    print("json", m.content[0].text, m.usage.input_tokens, m.usage.output_tokens)
    with c.messages.stream(model=model, max_tokens=50, messages=[{"role": "user", "content": "hi"}]) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    seen.append(final.model_dump_json())
    print("stream", text, final.usage.output_tokens)
    n = c.messages.count_tokens(model=model, messages=[{"role": "user", "content": "hi"}])
    print("count", n.input_tokens)
    models = [x.id for x in c.models.list()]
    print("models", ",".join(models))
    try:
        c.messages.create(model=model + "-other", max_tokens=5, messages=[{"role": "user", "content": "x"}])
        print("other-model allowed")
    except anthropic.PermissionDeniedError as e:
        seen.append(repr(e.body))
        print("other-model", e.status_code, e.body["error"]["type"])
    bad = anthropic.Anthropic(api_key="sk-ant-guessed-000", max_retries=0)
    try:
        bad.messages.create(model=model, max_tokens=5, messages=[{"role": "user", "content": "x"}])
        print("bad-key allowed")
    except anthropic.AuthenticationError as e:
        seen.append(repr(e.body))
        print("bad-key", e.status_code)
else:
    import openai

    c = openai.OpenAI(max_retries=0)
    r = c.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}])
    seen.append(r.model_dump_json())
    print("json", r.choices[0].message.content, r.usage.prompt_tokens, r.usage.completion_tokens)
    chunks = list(c.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}],
                                            stream=True, stream_options={"include_usage": True}))
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    usage = [ch.usage for ch in chunks if ch.usage]
    print("stream", text, usage[-1].completion_tokens)
    resp = c.responses.create(model=model, input="hi")
    seen.append(resp.model_dump_json())
    print("responses", resp.output_text, resp.usage.output_tokens)
    with c.responses.stream(model=model, input="hi") as s:
        for _ in s:
            pass
        final = s.get_final_response()
    print("responses-stream", final.output_text, final.usage.output_tokens)
    print("models", ",".join(m.id for m in c.models.list()))
    try:
        c.chat.completions.create(model=model + "-other", messages=[{"role": "user", "content": "x"}])
        print("other-model allowed")
    except openai.PermissionDeniedError as e:
        seen.append(repr(e.body))
        print("other-model", e.status_code, e.body["code"])
    bad = openai.OpenAI(api_key="sk-guessed-000", max_retries=0)
    try:
        bad.chat.completions.create(model=model, messages=[{"role": "user", "content": "x"}])
        print("bad-key allowed")
    except openai.AuthenticationError as e:
        seen.append(repr(e.body))
        print("bad-key", e.status_code)

print("key-is-placeholder", os.environ["ANTHROPIC_API_KEY"].startswith("spawn_gw_"),
      os.environ["OPENAI_API_KEY"] == os.environ["ANTHROPIC_API_KEY"])
for line in dump_sandbox() + ["SEEN " + s for s in seen]:
    print("DUMP", line)
