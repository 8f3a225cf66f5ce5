"""Build hook (hatchling): compiles veil.redact._cplan, the field plan's filtered-object loop, from
this repository's own C sources (src/veil/redact/_cplan.c, _cxform.c; the latter links OpenSSL's
libcrypto for SHA-256) with setuptools' build_ext.

Where no C compiler, no Python headers or no OpenSSL headers (libssl-dev) are found, the wheel is built
without it and veil runs the generated Python instead (same results, slower on large list responses); a
warning says so. Set VEIL_REQUIRE_NATIVE=1 to make that an error. An editable install (`pip install -e .`)
builds the module in place, next to its source.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

MODULE = "veil.redact._cplan"
SOURCES = ["src/veil/redact/_cplan.c", "src/veil/redact/_cxform.c"]  # _cxform.c: transforms (OpenSSL SHA-256)


class NativeBuildHook(BuildHookInterface):  # type: ignore[type-arg]
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if self.target_name != "wheel":
            return
        try:
            built = _compile(Path(self.root), inplace=version == "editable")
        except Exception as exc:  # a missing compiler or header shows up as several exception types
            if os.environ.get("VEIL_REQUIRE_NATIVE") == "1":
                raise
            print(f"veil: the native loop ({MODULE}) was not built: {exc}; the generated Python runs instead",
                  file=sys.stderr)
            return
        build_data["pure_python"] = False
        build_data["infer_tag"] = True
        if version != "editable":
            build_data["force_include"][str(built)] = f"veil/redact/{built.name}"


def _compile(root: Path, inplace: bool) -> Path:
    from setuptools import Distribution, Extension

    ext = Extension(MODULE, SOURCES, depends=["src/veil/redact/_cxform.h"], libraries=["crypto"],
                    extra_compile_args=["-O2"] if os.name != "nt" else [])
    dist = Distribution({"name": "veil-native", "ext_modules": [ext], "package_dir": {"": "src"}})
    cmd = dist.get_command_obj("build_ext")
    cwd = os.getcwd()
    os.chdir(root)
    try:
        if inplace:
            cmd.inplace = True  # type: ignore[attr-defined]
        else:
            cmd.build_lib = tempfile.mkdtemp(prefix="veil-native-")  # type: ignore[attr-defined]
        cmd.build_temp = tempfile.mkdtemp(prefix="veil-native-tmp-")  # type: ignore[attr-defined]
        cmd.ensure_finalized()
        cmd.run()
        out = Path(cmd.get_ext_fullpath(MODULE))  # type: ignore[attr-defined]
        return out if out.is_absolute() else root / out
    finally:
        os.chdir(cwd)
