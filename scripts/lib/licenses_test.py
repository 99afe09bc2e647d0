#!/usr/bin/env python3
"""Tests of licenses.py: the expressions it must pass and refuse, and a whole metadata document.

    python3 scripts/lib/licenses_test.py
"""

import contextlib
import io
import json
import os
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import licenses  # noqa: E402


def package(name, license, version="1.0.0", license_file=None):
    return {
        "name": name,
        "version": version,
        "id": f"registry+https://example.invalid#{name}@{version}",
        "license": license,
        "license_file": license_file,
    }


def metadata(*packages):
    own = package("clusterctl", licenses.OWN_LICENSE, version="0.1.0")
    own["id"] = "path+file:///work/clusterctl#0.1.0"
    return {"packages": [own, *packages], "workspace_members": [own["id"]]}


class Expressions(unittest.TestCase):
    def assert_passes(self, expression):
        self.assertIsNone(licenses.check_expression(expression), expression)

    def assert_refused(self, expression):
        self.assertIsNotNone(licenses.check_expression(expression), expression)

    def test_a_gpl3_only_crate_is_refused(self):
        self.assert_refused("GPL-3.0-only")
        self.assert_refused("GPL-3.0")
        self.assert_refused("AGPL-3.0-or-later")
        self.assert_refused("LGPL-2.1-only")

    def test_or_passes_when_one_side_is_allowed(self):
        self.assert_passes("MIT OR GPL-3.0")
        self.assert_passes("GPL-3.0-only OR Apache-2.0")
        self.assert_passes("MIT OR Apache-2.0")
        self.assert_refused("GPL-2.0-only OR GPL-3.0-only")

    def test_and_needs_both_sides_allowed(self):
        self.assert_passes("Apache-2.0 AND ISC")
        self.assert_passes("(MIT OR Apache-2.0) AND Unicode-3.0")
        self.assert_refused("MIT AND GPL-3.0-only")
        self.assert_refused("(MIT OR Apache-2.0) AND GPL-3.0-only")

    def test_and_binds_tighter_than_or(self):
        # MIT OR (GPL AND Apache): MIT alone suffices.
        self.assert_passes("MIT OR GPL-3.0-only AND Apache-2.0")
        # (MIT OR GPL) AND GPL-2.0: the GPL part cannot be avoided.
        self.assert_refused("(MIT OR GPL-3.0-only) AND GPL-2.0-only")
        self.assertEqual(licenses.parse("A OR B AND C"), ("OR", "A", ("AND", "B", "C")))

    def test_with_needs_an_allowed_license_and_a_known_exception(self):
        self.assert_passes("Apache-2.0 WITH LLVM-exception")
        self.assert_passes("Apache-2.0 WITH LLVM-exception OR Apache-2.0 OR MIT")
        self.assert_refused("GPL-2.0-only WITH Classpath-exception-2.0")
        self.assert_refused("Apache-2.0 WITH Made-Up-exception")
        self.assertEqual(licenses.parse("A WITH E OR B"), ("OR", ("WITH", "A", "E"), "B"))

    def test_or_later_is_allowed_when_the_version_named_is(self):
        self.assert_passes("Apache-2.0+")
        self.assert_refused("GPL-2.0+")

    def test_the_old_slash_form_reads_as_or(self):
        self.assert_passes("MIT/Apache-2.0")
        self.assert_passes("Unlicense/MIT")
        self.assert_refused("GPL-3.0/AGPL-3.0")

    def test_lower_case_operators_of_old_crates_are_read(self):
        self.assert_passes("MIT or Apache-2.0")

    def test_a_missing_or_malformed_license_is_refused(self):
        for expression in (None, "", "MIT OR", "(MIT", "MIT Apache-2.0", "MIT WITH", "(MIT OR ISC) WITH LLVM-exception", "MIT, Apache-2.0"):
            self.assert_refused(expression)

    def test_unknown_ids_are_refused(self):
        self.assert_refused("LicenseRef-Proprietary")
        self.assert_refused("mit")  # SPDX ids are case-sensitive in this list: only exact ones pass


class Metadata(unittest.TestCase):
    def run_main(self, document):
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
            json.dump(document, f)
        err = io.StringIO()
        try:
            with contextlib.redirect_stderr(err):
                code = licenses.main(["--metadata", f.name])
        finally:
            os.unlink(f.name)
        return code, err.getvalue()

    def test_a_gpl3_only_dependency_fails_the_check_naming_crate_and_license(self):
        code, err = self.run_main(metadata(package("serde", "MIT OR Apache-2.0"), package("copyleft-only", "GPL-3.0-only", "2.3.4")))
        self.assertEqual(code, 1)
        self.assertIn("copyleft-only 2.3.4 (GPL-3.0-only): not allowed: GPL-3.0-only", err)
        self.assertNotIn("serde 1.0.0", err)

    def test_a_dual_licensed_dependency_with_a_gpl_side_passes(self):
        code, err = self.run_main(metadata(package("either-way", "MIT OR GPL-3.0")))
        self.assertEqual(code, 0, err)

    def test_a_dependency_with_only_a_license_file_is_refused(self):
        code, err = self.run_main(metadata(package("mystery", None, license_file="LICENSE")))
        self.assertEqual(code, 1)
        self.assertIn("mystery 1.0.0 (license-file LICENSE): no license declared", err)

    def test_the_project_must_declare_its_own_license(self):
        document = metadata()
        document["packages"][0]["license"] = None
        code, err = self.run_main(document)
        self.assertEqual(code, 1)
        self.assertIn("clusterctl 0.1.0: declares None", err)


if __name__ == "__main__":
    unittest.main()
