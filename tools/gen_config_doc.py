"""The Markdown config reference for the README, generated from fastproxy/config.py's tables.

    python tools/gen_config_doc.py            # print it
    python tools/gen_config_doc.py --readme   # write it between the README's config-reference markers

Every table gets a key/default/meaning table, and so does every key whose value is an inline table
([upstreams.NAME] servers, health, passive, retries, sticky), from that table's dataclass.
The README's "Configuration reference" section is this output verbatim (a test compares them), so a key,
default or doc changes in one place: the dataclass field in config.py.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from fastproxy import config  # noqa: E402

HEADERS = {"table": "[{name}]", "array": "[[{name}]]", "map": "[{name}.NAME]"}


def toml_literal(value):
    if value is None:
        return "(none)"
    if isinstance(value, bool):
        return "`true`" if value else "`false`"
    if isinstance(value, str):
        return f'`"{value}"`'
    return f"`{value}`"


def table_doc(header, cls):
    summary = " ".join((cls.__doc__ or "").split(": ", 1)[-1].split())    # drop the "[table]: " prefix
    lines = [f"### `{header}`", "", summary, "",
             "| key | default | meaning |", "|---|---|---|"]
    for f in config.toml_fields(cls):
        if f.metadata.get("required"):
            default = "required"
        elif f.metadata.get("table") and f.metadata["toml_default"] is not None:
            default = "its keys' defaults"       # an inline table present by default: see its own table
        else:
            default = toml_literal(f.metadata["toml_default"])
        doc = f.metadata["doc"].replace("|", "\\|")
        lines.append(f"| `{f.name}` | {default} | {doc} |")
    return lines


def generate():
    out = [
        "Durations are seconds, or strings like `\"500ms\"`, `\"10s\"`, `\"2m\"`, `\"1h\"`. Sizes are bytes, or",
        "strings like `\"16k\"`, `\"1m\"`. Unknown keys are errors; `fastproxy check -c FILE` reports them all.",
        "",
    ]
    for name, (cls, kind) in config.SECTIONS.items():
        header = HEADERS[kind].format(name=name)
        out += table_doc(header, cls) + [""]
        # keys whose values are inline tables (servers, health, passive, retries, sticky): one table each
        for f in config.toml_fields(cls):
            if f.metadata.get("items"):
                out += table_doc(f"{header} {f.name} = [{{ ... }}]", f.metadata["items"]) + [""]
            elif f.metadata.get("table"):
                out += table_doc(f"{header} {f.name} = {{ ... }}", f.metadata["table"]) + [""]
    return "\n".join(out).rstrip() + "\n"


README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")
START, END = "<!-- config-reference:start -->\n", "<!-- config-reference:end -->"


def readme_section(text):
    """The part of the README between the markers."""
    return text[text.index(START) + len(START):text.index(END)]


def write_readme():
    with open(README) as f:
        text = f.read()
    head, tail = text[:text.index(START) + len(START)], text[text.index(END):]
    with open(README, "w") as f:
        f.write(head + generate() + tail)


if __name__ == "__main__":
    if sys.argv[1:] == ["--readme"]:
        write_readme()
    else:
        sys.stdout.write(generate())
