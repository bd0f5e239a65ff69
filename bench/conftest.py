"""``pytest bench/ --benchmark-only``: loads the bench's pytest plugin (:mod:`sidenet.cli.plugin`, shipped in the
package and also what ``sidenet-bench run`` hands pytest), which reads its own ``--bench-*`` options
(``pytest bench/ --help``, group "sidenet-bench").

Why the hooks are re-exported one by one: a conftest that is not at the rootdir may not declare ``pytest_plugins``,
and a plugin registered from a hook would come too late to add its options. Every name is one method of a single
:class:`~sidenet.cli.plugin.BenchPlugin` built without settings; it registers the fixtures itself.
"""

import pytest

pytest.register_assert_rewrite("sidenet.cli.bench_suite")  # its sanity asserts explain themselves when they fail

from sidenet.cli.plugin import BenchPlugin  # noqa: E402  (after the rewrite registration)

_PLUGIN = BenchPlugin()

pytest_addoption = _PLUGIN.pytest_addoption
pytest_cmdline_main = _PLUGIN.pytest_cmdline_main
pytest_configure = _PLUGIN.pytest_configure
pytest_collection_modifyitems = _PLUGIN.pytest_collection_modifyitems
pytest_generate_tests = _PLUGIN.pytest_generate_tests
pytest_runtest_makereport = _PLUGIN.pytest_runtest_makereport
pytest_benchmark_update_machine_info = _PLUGIN.pytest_benchmark_update_machine_info
pytest_sessionfinish = _PLUGIN.pytest_sessionfinish
pytest_terminal_summary = _PLUGIN.pytest_terminal_summary
