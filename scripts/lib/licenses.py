#!/usr/bin/env python3
"""Refuses a dependency whose license is not compatible with clusterctl's `MIT OR Apache-2.0`.

    scripts/lib/licenses.py [--metadata FILE]

Reads `cargo metadata` (of the checkout, or FILE: a saved copy, for tests) and evaluates every
package's SPDX license expression against ALLOWED: `OR` needs one side allowed, `AND` both, `A WITH
E` needs A allowed and E a known exception, `A+` (or later) needs A allowed; the old `A/B` form is
read as `A OR B`. Every package of the resolved graph is checked, for every target platform and
dev-dependencies included, so that nothing is allowed in by the platform it happens to be built on.
Prints each refused crate with its version and license and exits 1; exits 0 when all pass.
Standard library only: it runs before anything else is installed.
"""

import argparse
import json
import re
import subprocess
import sys

# What clusterctl itself is released under; the check refuses a checkout that drops it.
OWN_LICENSE = "MIT OR Apache-2.0"

# Licenses that let their code be distributed inside an `MIT OR Apache-2.0` binary: permissive ones,
# which ask for attribution at most. No copyleft: a GPL/LGPL/AGPL-only crate would put the whole
# binary under its terms. MPL-2.0 (file-level copyleft, compatible in practice) is left out until a
# dependency needs it; adding it then is a decision to write down in docs/ARCHITECTURE.md.
ALLOWED = {
    "0BSD",
    "Apache-2.0",
    "BSD-2-Clause",
    "BSD-3-Clause",
    "BSL-1.0",
    "CC0-1.0",
    # A permissive license for data: webpki-root-certs (Mozilla's root certificates, which reqwest's
    # platform verifier uses on targets without a system store; not on Linux) asks only that the
    # license text go with the data itself.
    "CDLA-Permissive-2.0",
    "ISC",
    "MIT",
    "MIT-0",
    "Unicode-3.0",
    "Unicode-DFS-2016",
    "Unlicense",
    "Zlib",
}

# Exceptions only grant permissions beyond their license's; they are listed so that a misspelt or
# unknown one is refused rather than trusted.
ALLOWED_EXCEPTIONS = {"LLVM-exception"}


class ExpressionError(ValueError):
    """A license field that is not an SPDX expression."""


_TOKEN = re.compile(r"\s*(\(|\)|/|[A-Za-z0-9.+:-]+)")


def _tokens(expression):
    tokens, pos = [], 0
    expression = expression.strip()
    while pos < len(expression):
        m = _TOKEN.match(expression, pos)
        if not m:
            raise ExpressionError(f"unexpected {expression[pos:]!r} in {expression!r}")
        tokens.append(m.group(1))
        pos = m.end()
    return tokens


def parse(expression):
    """Parses an SPDX expression into nested tuples: ("OR", a, b), ("AND", a, b), ("WITH", id, exc), id."""
    tokens = _tokens(expression)
    if not tokens:
        raise ExpressionError("empty license expression")
    pos = 0

    def peek():
        return tokens[pos] if pos < len(tokens) else None

    def take():
        nonlocal pos
        token = peek()
        if token is None:
            raise ExpressionError(f"{expression!r} ends too early")
        pos += 1
        return token

    def is_op(token, op):
        # SPDX operators are upper case; some old crates wrote them in lower case.
        return token is not None and token.upper() == op

    # Precedence, loosest first: OR (and the old "/"), AND, WITH.
    def or_expr():
        left = and_expr()
        while is_op(peek(), "OR") or peek() == "/":
            take()
            left = ("OR", left, and_expr())
        return left

    def and_expr():
        left = with_expr()
        while is_op(peek(), "AND"):
            take()
            left = ("AND", left, with_expr())
        return left

    def with_expr():
        left = primary()
        if is_op(peek(), "WITH"):
            take()
            exception = take()
            if exception in ("(", ")", "/") or exception.upper() in ("AND", "OR", "WITH"):
                raise ExpressionError(f"WITH needs an exception id in {expression!r}")
            if not isinstance(left, str):
                raise ExpressionError(f"WITH applies to a license id, not a group, in {expression!r}")
            return ("WITH", left, exception)
        return left

    def primary():
        token = take()
        if token == "(":
            inner = or_expr()
            if take() != ")":
                raise ExpressionError(f"unbalanced parenthesis in {expression!r}")
            return inner
        if token in (")", "/") or token.upper() in ("AND", "OR", "WITH"):
            raise ExpressionError(f"a license id expected, {token!r} found in {expression!r}")
        return token

    tree = or_expr()
    if pos != len(tokens):
        raise ExpressionError(f"unexpected {tokens[pos]!r} in {expression!r}")
    return tree


def _id_allowed(license_id):
    if license_id in ALLOWED:
        return True
    # "A+" is A or any later version, so A itself may be chosen.
    return license_id.endswith("+") and license_id[:-1] in ALLOWED


def allowed(tree):
    """Whether code under the parsed expression may be distributed under clusterctl's license."""
    if isinstance(tree, str):
        return _id_allowed(tree)
    op, left, right = tree
    if op == "OR":
        return allowed(left) or allowed(right)
    if op == "AND":
        return allowed(left) and allowed(right)
    return _id_allowed(left) and right in ALLOWED_EXCEPTIONS  # WITH


def refused_ids(tree):
    """The ids in the expression that are not allowed on their own (to say why one was refused)."""
    if isinstance(tree, str):
        return [] if _id_allowed(tree) else [tree]
    op, left, right = tree
    if op == "WITH":
        return [] if allowed(tree) else [f"{left} WITH {right}"]
    return refused_ids(left) + refused_ids(right)


def check_expression(expression):
    """None when `expression` is acceptable, else the reason it is not."""
    if not expression:
        return "no license declared"
    try:
        tree = parse(expression)
    except ExpressionError as e:
        return str(e)
    if allowed(tree):
        return None
    return "not allowed: " + ", ".join(dict.fromkeys(refused_ids(tree)))


def check_metadata(metadata):
    """The problems found in `cargo metadata` output, one line each (empty: all pass)."""
    members = set(metadata.get("workspace_members", []))
    problems = []
    for package in sorted(metadata["packages"], key=lambda p: (p["name"], p["version"])):
        license = package.get("license")
        name = f"{package['name']} {package['version']}"
        if package["id"] in members:
            if license != OWN_LICENSE:
                problems.append(f"{name}: declares {license!r}, not {OWN_LICENSE!r} (Cargo.toml `license`)")
            continue
        reason = check_expression(license)
        if reason is not None:
            shown = license if license else f"license-file {package.get('license_file')}"
            problems.append(f"{name} ({shown}): {reason}")
    return problems


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--metadata", help="a saved `cargo metadata --format-version 1` output instead of running it")
    args = parser.parse_args(argv)
    if args.metadata:
        with open(args.metadata, encoding="utf-8") as f:
            metadata = json.load(f)
    else:
        out = subprocess.run(["cargo", "metadata", "--format-version", "1", "--locked"], check=True, stdout=subprocess.PIPE)
        metadata = json.loads(out.stdout)
    problems = check_metadata(metadata)
    for p in problems:
        print(f"licenses: {p}", file=sys.stderr)
    count = len(metadata["packages"])
    if problems:
        print(f"licenses: {len(problems)} of {count} packages refused; allowed: {', '.join(sorted(ALLOWED))}", file=sys.stderr)
        return 1
    print(f"licenses: all {count} packages compatible with {OWN_LICENSE}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
