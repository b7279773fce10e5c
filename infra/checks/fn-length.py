#!/usr/bin/env python3
"""Fails when a function in lib/src is longer than 60 lines (from its `fn` line to its closing
brace) without a comment at its head saying why it must be longer (issue 13: long functions mix
decisions with I/O, and hide them from unit tests).

A function may be longer if one of the comment lines right above it (doc or plain) contains
"longer than 60 lines" followed by the reason.

    python3 infra/checks/fn-length.py [root]   # default: lib/src
"""

import pathlib
import re
import sys

LIMIT = 60
EXEMPT = "longer than 60 lines"
FN = re.compile(r"^\s*(?:pub(?:\([^)]*\))?\s+)?(?:const\s+)?(?:async\s+)?(?:unsafe\s+)?fn\s+(\w+)")


def code_only(text):
    """The text with comments, strings and char literals blanked out (newlines kept), so that
    braces inside them are not counted."""
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        two = text[i : i + 2]
        if two == "//":
            j = text.find("\n", i)
            j = n if j < 0 else j
            out.append(" " * (j - i))
            i = j
        elif two == "/*":
            j = text.find("*/", i + 2)
            j = n if j < 0 else j + 2
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif c == "r" and re.match(r'r#*"', text[i:]) and not (i and (text[i - 1].isalnum() or text[i - 1] == "_")):
            hashes = re.match(r"r(#*)\"", text[i:]).group(1)
            end = '"' + hashes
            j = text.find(end, i + 2 + len(hashes))
            j = n if j < 0 else j + len(end)
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            j = min(j + 1, n)
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif c == "'":
            # A char literal ('x', '\n', '{'); a lifetime ('a) is left as it is.
            m = re.match(r"'(\\.[^']*|[^\\'])'", text[i:])
            if m:
                out.append(" " * len(m.group(0)))
                i += len(m.group(0))
            else:
                out.append(c)
                i += 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def long_functions(path):
    source = path.read_text()
    lines = source.split("\n")
    code = code_only(source).split("\n")
    found = []
    for start, line in enumerate(code):
        m = FN.match(line)
        if not m:
            continue
        depth, opened, end = 0, False, None
        for k in range(start, len(code)):
            for ch in code[k]:
                if ch == "{":
                    depth, opened = depth + 1, True
                elif ch == "}":
                    depth -= 1
                elif ch == ";" and not opened and depth == 0:
                    end = k  # a declaration without a body (a trait method)
                    break
            if end is not None or (opened and depth == 0):
                end = k
                break
        if end is None or not opened:
            continue
        length = end - start + 1
        if length <= LIMIT:
            continue
        head = []
        k = start - 1
        while k >= 0 and lines[k].strip().startswith(("//", "#[")):
            head.append(lines[k])
            k -= 1
        if any(EXEMPT in h.lower() for h in head):
            continue
        found.append((path, start + 1, m.group(1), length))
    return found


def main():
    root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "lib/src")
    found = [f for p in sorted(root.rglob("*.rs")) for f in long_functions(p)]
    for path, line, name, length in found:
        print(f"{path}:{line}: fn {name} is {length} lines (at most {LIMIT}, or say why at its head)")
    if found:
        sys.exit(1)
    print(f"fn-length: no function in {root} is over {LIMIT} lines")


if __name__ == "__main__":
    main()
