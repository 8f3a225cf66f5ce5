"""The policy language: parse → AST → checks → compiled policy (plain Python functions).

    load_policy(paths, keys) → CompiledPolicy      raises Diagnostics with every error found

Pure: imports no starlette, httpx, aiohttp or database code.
"""

from veil.policy.load import load_policy, load_sources

__all__ = ["load_policy", "load_sources"]
