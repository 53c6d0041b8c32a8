"""Stand-ins for the repositories Bazel 4's @bazel_tools loads, so builds run offline.

Bazel 4 (including Debian's bazel-bootstrap, which has no embedded distdir)
declares @rules_cc, @rules_java, @rules_proto, @platforms and
@remote_coverage_tools as http_archives and fetches them from GitHub the first
time any py_binary/py_test is analysed, because those rules implicitly depend on
the C++ toolchain and the test/coverage tools. Declaring repositories with the
same names first in WORKSPACE makes Bazel skip the downloads. The stand-ins only
re-export Bazel's native rules and declare the platform constraints; nothing
here is built for a pure-Python project.
"""

def _stub_repo_impl(ctx):
    ctx.file("WORKSPACE", 'workspace(name = "%s")\n' % ctx.name)
    for path, content in ctx.attr.files.items():
        ctx.file(path, content)

_stub_repo = repository_rule(
    implementation = _stub_repo_impl,
    attrs = {"files": attr.string_dict()},
    local = True,
)

def _reexport(names):
    """A .bzl body defining each name as a macro calling the native rule."""
    return "".join([
        "def {n}(**kwargs):\n    native.{n}(**kwargs)\n\n".format(n = n)
        for n in names
    ])

_CC_RULES = [
    "cc_binary",
    "cc_import",
    "cc_library",
    "cc_proto_library",
    "cc_test",
    "cc_toolchain",
    "cc_toolchain_suite",
    "fdo_prefetch_hints",
    "fdo_profile",
    "objc_import",
    "objc_library",
]

_JAVA_RULES = [
    "java_binary",
    "java_import",
    "java_library",
    "java_lite_proto_library",
    "java_package_configuration",
    "java_plugin",
    "java_proto_library",
    "java_runtime",
    "java_test",
    "java_toolchain",
]

_PROTO_RULES = ["proto_lang_toolchain", "proto_library"]

_OS = [
    "android", "emscripten", "freebsd", "fuchsia", "haiku", "ios", "linux",
    "macos", "netbsd", "nixos", "none", "openbsd", "qnx", "tvos", "uefi",
    "vxworks", "wasi", "watchos", "windows",
]

_CPU = [
    "aarch32", "aarch64", "arm", "arm64_32", "arm64e", "armv6-m", "armv7",
    "armv7-m", "armv7e-m", "armv7k", "armv8-m", "i386", "mips64", "ppc",
    "riscv32", "riscv64", "s390x", "wasm32", "wasm64", "x86_32", "x86_64",
]

def _constraints(setting, values, aliases):
    body = 'package(default_visibility = ["//visibility:public"])\n\n'
    body += 'constraint_setting(name = "%s")\n\n' % setting
    for v in values:
        body += 'constraint_value(name = "%s", constraint_setting = ":%s")\n' % (v, setting)
    for alias, actual in aliases.items():
        body += 'alias(name = "%s", actual = ":%s")\n' % (alias, actual)
    return body

def _unavailable(name):
    """A target that fails only if something actually tries to run it."""
    return ('sh_binary(name = "{n}", srcs = ["unavailable.sh"], ' +
            'visibility = ["//visibility:public"])\n').format(n = name)

def offline_stub_repos():
    """Declares every stand-in repository; call first thing in WORKSPACE."""
    _stub_repo(
        name = "rules_cc",
        files = {
            "cc/BUILD": 'alias(name = "toolchain_type", actual = "@bazel_tools//tools/cpp:toolchain_type", visibility = ["//visibility:public"])\n',
            "cc/defs.bzl": _reexport(_CC_RULES),
        },
    )
    _stub_repo(
        name = "rules_java",
        files = {"java/BUILD": "", "java/defs.bzl": _reexport(_JAVA_RULES)},
    )
    _stub_repo(
        name = "rules_proto",
        files = {
            "proto/BUILD": "",
            "proto/defs.bzl": _reexport(_PROTO_RULES) + "ProtoInfo = ProtoInfo\n",
        },
    )
    _stub_repo(
        name = "platforms",
        files = {
            "BUILD": "",
            "os/BUILD": _constraints("os", _OS, {"osx": "macos"}),
            "cpu/BUILD": _constraints("cpu", _CPU, {"arm64": "aarch64"}),
        },
    )
    _stub_repo(
        name = "remote_coverage_tools",
        files = {
            "BUILD": _unavailable("lcov_merger") + _unavailable("coverage_report_generator"),
            "unavailable.sh": "#!/bin/sh\necho 'bazel coverage is not available offline' >&2\nexit 1\n",
        },
    )
