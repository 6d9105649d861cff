"""The tools that ship with kfcpo beside fit, eval and export: `kfcpo benchmark`,
`kfcpo plot`, `kfcpo ablate` and the `kfcpo bench ...` measurements.

`commands` declares their command lines (light: no torch, no envs, no matplotlib); each
command's work lives in its own module, imported only when that command runs. Bad input
is a `ConfigError` (one line), which `kfcpo.cli` prints as `kfcpo: error: ...`, exit 2.
"""
