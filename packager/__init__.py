"""orbit-packager: Fleet Orbit installers and the TUF update repository they trust."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from collections.abc import Sequence
    from importlib.abc import Loader
    from importlib.machinery import ModuleSpec
    from types import ModuleType

__version__ = "0.1.0"

# securesystemslib.signer imports the SDK of every optional signer that is installed
# (securesystemslib issue #1198): boto3 alone costs ~0.13 s, and boto3 is installed wherever
# moto (a test dependency) is. We sign with key files and PKCS#11 through our own code
# (packager.repo.hsm), never with these signers, so they are hidden while that one module runs.
_SIGNER_MODULE = "securesystemslib.signer"
_SIGNER_SDKS = (
    "boto3",  # AWSSigner
    "botocore",
    "google.cloud.kms",  # GCPSigner
    "azure.core",  # AzureSigner
    "azure.identity",
    "azure.keyvault",
    "hvac",  # VaultSigner
    "keylet",  # TKeySigner
    "pkcs11",  # HSMSigner (packager.repo.hsm imports pkcs11 itself, when a pkcs11: URI is used)
)


class _WithoutSignerSdks:
    """Loader wrapper (as importlib.util.LazyLoader wraps one): runs the module with the SDKs
    marked unavailable -- a None in sys.modules makes their import raise ModuleNotFoundError,
    which securesystemslib catches -- then removes the marks, so ``import boto3`` works again
    (the S3 tests use it). An SDK already imported is left alone."""

    def __init__(self, loader: Any) -> None:
        self._loader = loader

    def __getattr__(self, name: str) -> Any:  # get_source, get_resource_reader, ...
        return getattr(self._loader, name)

    def create_module(self, spec: ModuleSpec) -> ModuleType | None:
        module: ModuleType | None = self._loader.create_module(spec)
        return module

    def exec_module(self, module: ModuleType) -> None:
        hidden = [name for name in _SIGNER_SDKS if name not in sys.modules]
        for name in hidden:
            sys.modules[name] = None  # type: ignore[assignment]
        try:
            self._loader.exec_module(module)
        finally:
            for name in hidden:
                if name in sys.modules and sys.modules[name] is None:
                    del sys.modules[name]


class _SignerSdkHider:
    """Meta path finder: finds securesystemslib.signer with the finders after it and wraps
    its loader. Once only: a later import finds the module in sys.modules."""

    def find_spec(
        self, name: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if name != _SIGNER_MODULE:
            return None
        sys.meta_path.remove(self)
        for finder in sys.meta_path:
            find = getattr(finder, "find_spec", None)
            spec: ModuleSpec | None = find(name, path, target) if find is not None else None
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = cast("Loader", _WithoutSignerSdks(spec.loader))
                return spec
        return None


if _SIGNER_MODULE not in sys.modules:
    sys.meta_path.insert(0, _SignerSdkHider())
