"""Refuses to build a wheel without the browser SDK or the licence texts.

`cargo xtask wheel` copies them in (from js/dist and the repository root); a wheel
built without them would install fine and then record nothing.
"""

from pathlib import Path

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

REQUIRED = [
    "src/hourofci_lesson/sdk/hourofci-log.js",
    "src/hourofci_lesson/sdk/hourofci_sdk.js",
    "src/hourofci_lesson/sdk/hourofci_sdk_bg.wasm",
    "LICENSE-MIT",
    "LICENSE-APACHE",
]


class CustomBuildHook(BuildHookInterface):
    def initialize(self, version, build_data):
        root = Path(self.root)
        missing = [p for p in REQUIRED if not (root / p).is_file()]
        if missing:
            raise RuntimeError(
                f"hourofci-lesson: missing {', '.join(missing)}; build with `cargo xtask wheel` "
                "from the repository root (it builds the SDK and copies it in)"
            )
