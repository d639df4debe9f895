#!/usr/bin/env python3
"""Tests of scripts/localenv.py (run by `make unit`): the shipped files render as the tests, the
demo and the benchmark expect; a shipped file of another shape is an error, never a silent no-op;
plugin configurations survive the YAML round trip through the crate's reader; a PostgreSQL bind
failure is retried on another port. Envoy itself accepting the rendering is checked in
tests/reliability.rs (`envoy --mode validate`)."""
import os
import shutil
import socket
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import localenv  # noqa: E402

SHIPPED_ENVOY = localenv.read(localenv.SHIPPED_ENVOY)
SHIPPED_ECDS = localenv.read(localenv.SHIPPED_ECDS)
HAS_CHECK = os.access(localenv.DBFAULT_BIN, os.X_OK)
HAS_PG = os.access(os.path.join(localenv.PG_BIN, "initdb"), os.X_OK)


def changed(before, after):
    """{line number: (old, new)} of the lines that differ (renders never add or remove lines)."""
    a, b = before.split("\n"), after.split("\n")
    assert len(a) == len(b)
    return {i: (x.strip(), y.strip()) for i, (x, y) in enumerate(zip(a, b)) if x != y}


class EnvoyConfig(unittest.TestCase):
    def render(self, text=SHIPPED_ENVOY, upstreams=None):
        return localenv.render_envoy_config("/run/x/dbfault.yaml", upstreams, text=text, name="t.yaml")

    def test_the_newest_installed_postgresql_is_found(self):
        with tempfile.TemporaryDirectory() as root:
            for major, with_initdb in ((13, True), (16, True), (17, False)):
                bin_dir = os.path.join(root, str(major), "bin")
                os.makedirs(bin_dir)
                if with_initdb:
                    path = os.path.join(bin_dir, "initdb")
                    with open(path, "w") as f:
                        f.write("#!/bin/sh\n")
                    os.chmod(path, 0o755)
            # 17 has no server binaries: 16 is the newest server.
            self.assertEqual(localenv.newest_pg_bin(root), os.path.join(root, "16", "bin"))
            self.assertIsNone(localenv.newest_pg_bin(os.path.join(root, "none")))

    def test_the_shipped_config_gets_free_ports_and_absolute_ecds_paths(self):
        out = self.render(upstreams={"redis": 7001, "outbound|443||firestore.googleapis.com": 7002})
        doc = localenv.Document(out, "out")
        resources = doc.child(doc.root, "static_resources")
        listeners = doc.items(doc.child(resources, "listeners"))
        self.assertEqual([doc.name_of(item) for item in listeners], ["postgres", "redis", "mariadb", "tls", "firestore"])
        for item in listeners + [doc.child(doc.root, "admin")]:
            self.assertIn("port_value: 0}", doc.path(item, "address", "socket_address").value)
        diff = changed(SHIPPED_ENVOY, out)
        self.assertEqual(sum("port_value: 0}" in new for _, new in diff.values()), 1 + 5)  # admin, listeners
        self.assertEqual(sum("port_value: 7001}" in new for _, new in diff.values()), 1)
        self.assertIn(("path: dbfault.yaml", "path: '/run/x/dbfault.yaml'"), diff.values())
        self.assertIn(("watched_directory: {path: .}", "watched_directory: {path: '/run/x'}"), diff.values())
        self.assertEqual(len(diff), 6 + 2 + 2)  # admin + 5 listeners, 2 clusters, the ECDS source
        # Clusters not named keep their shipped endpoints.
        self.assertIn("port_value: 5432}", out)

    def test_an_unknown_cluster_is_an_error_naming_the_known_ones(self):
        with self.assertRaisesRegex(localenv.LocalEnvError, r"no cluster named 'pg' \(clusters: postgres, redis"):
            self.render(upstreams={"pg": 1})

    def assert_refused(self, old, new, message):
        self.assertIn(old, SHIPPED_ENVOY)
        with self.assertRaisesRegex(localenv.LocalEnvError, message):
            self.render(SHIPPED_ENVOY.replace(old, new, 1), upstreams={"postgres": 1})

    def test_a_shipped_config_of_another_shape_is_refused_loudly(self):
        # A listener whose port is not where it is expected.
        self.assert_refused("socket_address: {address: 127.0.0.1, port_value: 15432}",
                            "socket_address: {address: 127.0.0.1}", "no single `port_value`")
        self.assert_refused("    address:\n      socket_address: {address: 127.0.0.1, port_value: 15432}",
                            "    addr:\n      socket_address: {address: 127.0.0.1, port_value: 15432}",
                            "no `address` \\(under item at line")
        # A cluster with two endpoints: which one would the port go to?
        self.assert_refused("        - endpoint:\n            address:\n              socket_address: "
                            "{address: 127.0.0.1, port_value: 5432}",
                            "        - endpoint:\n            address:\n              socket_address: "
                            "{address: 127.0.0.1, port_value: 5432}\n        - endpoint:\n            address:\n"
                            "              socket_address: {address: 127.0.0.2, port_value: 5432}",
                            "cluster 'postgres' has 2 endpoints")
        self.assert_refused("path_config_source:", "api_config_source:", "no `path_config_source`")
        self.assert_refused("watched_directory: {path: .}", "watched_directory: {dir: .}", "no single `path`")
        # YAML this renderer does not read: refused rather than guessed at.
        self.assert_refused("stat_prefix: postgres", "stat_prefix: 'post\n          gres'", "continues on the next line")
        self.assert_refused("stat_prefix: postgres", "stat_prefix: |\n            postgres", "block scalar")
        self.assert_refused("stat_prefix: postgres", "stat_prefix: [a,\n b]", "spans lines")

    def test_block_and_flow_forms_are_both_edited(self):
        text = SHIPPED_ENVOY.replace("socket_address: {address: 127.0.0.1, port_value: 5432}",
                                     "socket_address:\n                address: 127.0.0.1\n"
                                     "                port_value: 5432  # the database", 1)
        out = self.render(text, upstreams={"postgres": 6543})
        self.assertIn("                port_value: 6543  # the database\n", out)


class Ecds(unittest.TestCase):
    def test_module_and_plugin_config_replace_two_lines_only(self):
        out = localenv.render_ecds("/m/dbfault.wasm", '{"faults": []}')
        diff = changed(SHIPPED_ECDS, out)
        self.assertEqual(sorted(new for _, new in diff.values()),
                         ["filename: '/m/dbfault.wasm'", """value: '{"faults": []}'"""])
        self.assertEqual(localenv.render_ecds(), SHIPPED_ECDS)

    def test_two_resources_are_refused(self):
        start = SHIPPED_ECDS.index("- \"@type\"")
        text = SHIPPED_ECDS + SHIPPED_ECDS[start:]
        with self.assertRaisesRegex(localenv.LocalEnvError, "2 resources, not one"):
            localenv.render_ecds("/m.wasm", "{}", text=text)

    def test_yaml_strings_are_single_quoted_when_printable(self):
        self.assertEqual(localenv.yaml_string("it's {\"a\": 1}"), "'it''s {\"a\": 1}'")
        self.assertEqual(localenv.yaml_string("a\nb\x7f\u2028😀\"\\"), '"a\\nb\\x7f\\u2028\\U0001f600\\"\\\\"')
        with self.assertRaises(localenv.LocalEnvError):
            localenv.yaml_string("\udcff")  # a raw byte smuggled in by surrogateescape

    @unittest.skipUnless(HAS_CHECK, f"{localenv.DBFAULT_BIN} not built")
    def test_plugin_configs_read_back_exactly_through_the_crates_reader(self):
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "dbfault.yaml")
            with open(path, "w") as f:
                f.write(localenv.render_ecds("/m.wasm", "{}"))
            for config in ["", "{}", "it's", "kind: x\n  - y\r\n\t", '\x01\x7f\x85 é \u2028 \ufeff 😀 "q" \\ #']:
                localenv.set_plugin_config(path, config)
                self.assertEqual(localenv.read_plugin_config(path), config)
            self.assertEqual(os.listdir(tmp), ["dbfault.yaml"])  # no temporary file left


@unittest.skipUnless(HAS_PG, f"no PostgreSQL in {localenv.PG_BIN}")
class Postgres(unittest.TestCase):
    def test_a_port_taken_before_postgres_binds_it_is_retried(self):
        taken = socket.socket()
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        picks = [busy]
        free = localenv.free_port
        localenv.free_port = lambda: picks.pop() if picks else free()
        tmp = tempfile.mkdtemp(prefix="dbfault-localenv-")
        try:
            port = localenv.postgres_start(tmp)
            self.assertNotEqual(port, busy)
            with socket.create_connection(("127.0.0.1", port), timeout=5):
                pass
            localenv.postgres_stop(tmp)
            with self.assertRaisesRegex(localenv.LocalEnvError, f"did not start on 127.0.0.1:{busy}"):
                localenv.postgres_start(tmp, port=busy)  # a fixed port is not retried
        finally:
            localenv.free_port = free
            taken.close()
            localenv.postgres_stop(tmp)  # harmless when already stopped
            shutil.rmtree(tmp)


if __name__ == "__main__":
    unittest.main()
