#!/usr/bin/env python3
"""Enforces deny.toml's [bans] and [licenses] on every crate Cargo.lock resolves (all
targets and platforms), from `cargo metadata`. Exits 1 naming each offender and what to do.

License expressions are SPDX: `A OR B` needs one side allowed, `A AND B` both, `A WITH X`
needs `A WITH X` or `A` allowed; the legacy `A/B` means `A OR B`."""
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def tokens(expr):
    return re.findall(r"\(|\)|[A-Za-z0-9.+\-]+", expr.replace("/", " OR "))


def allowed(expr, allow):
    toks = tokens(expr)
    pos = 0

    def atom():
        nonlocal pos
        if toks[pos] == "(":
            pos += 1
            value = disjunction()
            pos += 1  # ")"
            return value
        name = toks[pos]
        pos += 1
        if pos < len(toks) and toks[pos] == "WITH":
            exception = toks[pos + 1]
            pos += 2
            return f"{name} WITH {exception}" in allow or name in allow
        return name in allow

    def conjunction():
        nonlocal pos
        value = atom()
        while pos < len(toks) and toks[pos] == "AND":
            pos += 1
            value = atom() and value
        return value

    def disjunction():
        nonlocal pos
        value = conjunction()
        while pos < len(toks) and toks[pos] == "OR":
            pos += 1
            value = conjunction() or value
        return value

    return disjunction()


def main():
    policy = tomllib.loads((ROOT / "deny.toml").read_text())
    allow = set(policy["licenses"]["allow"])
    banned = {b["crate"]: b.get("reason", "") for b in policy["bans"]["deny"]}
    metadata = json.loads(
        subprocess.run(
            ["cargo", "metadata", "--format-version", "1", "--locked"],
            cwd=ROOT,
            check=True,
            capture_output=True,
        ).stdout
    )
    problems = []
    for package in metadata["packages"]:
        name, version = package["name"], package["version"]
        if name in banned:
            problems.append(
                f"banned crate {name} {version}: {banned[name]} "
                f"(what pulls it in: cargo tree --workspace -i {name})"
            )
        license = package.get("license")
        if not license:
            problems.append(
                f"{name} {version} declares no SPDX license (license-file only): review it, "
                "then allow it in deny.toml"
            )
        elif not allowed(license, allow):
            problems.append(
                f"{name} {version} is licensed `{license}`, which deny.toml's [licenses] "
                "allow list does not satisfy"
            )
    for p in problems:
        print(p, file=sys.stderr)
    if problems:
        return 1
    print(
        f"dependencies: {len(metadata['packages'])} crates, none banned, every license allowed"
    )
    return 0


def selftest():
    allow = {"MIT", "Apache-2.0", "Apache-2.0 WITH LLVM-exception"}
    assert allowed("MIT OR Apache-2.0", allow)
    assert allowed("MIT/Apache-2.0", allow)
    assert allowed("(MIT OR Apache-2.0) AND MIT", allow)
    assert not allowed("MIT AND BSD-3-Clause", allow)
    assert not allowed("GPL-3.0", allow)
    assert allowed("GPL-3.0 OR MIT", allow)
    assert allowed("Apache-2.0 WITH LLVM-exception", allow)
    assert not allowed("GPL-2.0 WITH Classpath-exception-2.0", allow)
    print("check-deps self-test: ok")


if __name__ == "__main__":
    if sys.argv[1:] == ["--selftest"]:
        selftest()
        sys.exit(0)
    sys.exit(main())
